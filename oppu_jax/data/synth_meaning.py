"""The second kind of generated data (`synth.generate(..., kind="meaning")`): cues evoked by
meaning, not by shared words, and habits beyond a constant shift. What `synth_makers` is to the
first kind, for LaMP_2M, LaMP_3 and LaMP_5: per task a maker (`user`, `draw`, `habit`) and an
oracle.

Every cue is a phrase from a family of paraphrases (`oppu_jax/data/phrases/`): a movie's tags
are clauses that evoke them ("a crew wakes from cold sleep light-years from home" for sci-fi), a
review's rating is how the buyer describes the product's fate, a paper's method and problem are
named by phrases of its field. Each user owns one random half of every family, and its history
is written only with its own half; a query takes a phrase from the other half with probability
`shift` (the recipe's 1: a query's wording is never in its user's history, only in other
users').

The habits (the personal part of a gold):
- LaMP_3: gold = habit(text rating r, product category), one of: a shift (-2, -1, +1), compress
  (1..5 -> 3,3,4,4,5), extreme (1,1,3,5,5), by category (harsh on one of its categories, lenient
  on another), none. With probability `noise` the gold is off by one.
- LaMP_2M: each movie evokes 2-5 tags in equal measure (tags of the user's 6 home tags three times
  as likely); the user tags it with the plausible tag highest in its fixed personal order
  (global popularity + a personal draw). With probability `noise`, another plausible tag.
- LaMP_5: the title names the abstract's method and problem in the user's one title template
  ("towards P with M", "can M improve P", ...) and case. With probability `noise`, the default
  template ("M for P").

The oracles (`synth.oracle_report`): "non_personalized" knows what the text says (the rating r;
the plausible tags, ranked by global popularity; the method and problem, in the default
template), "from_history" fits the user's habit to its own history (the habit family's best fit;
head-to-head wins between tags; the most frequent template), "personalized" knows the habit.
"""

from __future__ import annotations

import math
import random

from oppu_jax.data import synth_makers
from oppu_jax.data.phrases import movies
from oppu_jax.data.phrases import research as papers
from oppu_jax.data.phrases import reviews
from oppu_jax.data.synth_makers import Draw

# --- shared: each user's half of every family --------------------------------------------------


def _halves(rng: random.Random, families: dict) -> dict:
  """{family key: the indices of the phrases the user writes its history with} (half of each)."""
  return {key: frozenset(rng.sample(range(len(f)), len(f) // 2)) for key, f in families.items()}


def _phrases(rng: random.Random, family, own: frozenset, cfg, query: bool,
             k: int = 1) -> list[tuple[str, int]]:
  """k distinct (phrase, index) from the user's own half, or for a query with probability
  cfg.shift from the other half. The halves have equal sizes (families have even lengths), so
  `shift` never changes how many draws are taken, nor with them the latents that follow."""
  other = query and rng.random() < cfg.shift
  pool = [i for i in range(len(family)) if (i in own) != other]
  return [(family[i], i) for i in rng.sample(pool, k)]


def _sentence(text: str) -> str:
  return text[0].upper() + text[1:]


# --- LaMP_3: ratings under a personal habit -----------------------------------------------------

RATINGS = (0.12, 0.13, 0.2, 0.25, 0.3)  # the text's rating 1..5; reviews skew positive
COMPRESS = {1: 3, 2: 3, 3: 4, 4: 4, 5: 5}
EXTREME = {1: 1, 2: 1, 3: 3, 4: 5, 5: 5}
HABITS = (("shift", 0.3), ("compress", 0.15), ("extreme", 0.15), ("by_category", 0.2),
          ("none", 0.2))
_REVIEW_FRAMES = ("{product}: {c1}, and {c2}.", "Bought {product}. {C1}; {c2}.",
                  "About {product}: {c1}. {C2}.", "{Product} - {c1}, {c2}.")


def _clip(x: int) -> int:
  return min(5, max(1, x))


def rate(habit: dict, r: int, category: str) -> int:
  """The gold a user with `habit` gives a product of `category` whose review reads as `r`."""
  kind = habit["kind"]
  if kind == "compress":
    return COMPRESS[r]
  if kind == "extreme":
    return EXTREME[r]
  if kind == "shift":
    return _clip(r + habit["bias"])
  if kind == "by_category":
    return _clip(r + habit["bias"].get(category, 0))
  return r


class _Rating:

  @staticmethod
  def user(rng, task):
    kind = rng.choices([k for k, _ in HABITS], [p for _, p in HABITS])[0]
    categories = rng.sample(sorted(reviews.PRODUCTS), 3)
    habit = {"kind": kind}
    if kind == "shift":
      habit["bias"] = rng.choice((-2, -1, 1))
    elif kind == "by_category":
      habit["bias"] = {categories[0]: rng.choice((-2, -1)), categories[1]: 1}
    families = {("review", r): reviews.REVIEW_CUES[r] for r in reviews.REVIEW_CUES}
    families |= {("product", c): reviews.PRODUCTS[c] for c in categories}
    return {"habit": habit, "categories": categories, "own": _halves(rng, families)}

  @staticmethod
  def draw(rng, task, pref, cfg, query):
    r = rng.choices(range(1, 6), RATINGS)[0]
    category = rng.choice(pref["categories"])
    own = pref["own"]
    [(product, p)] = _phrases(rng, reviews.PRODUCTS[category], own["product", category], cfg,
                              query)
    (c1, i1), (c2, i2) = _phrases(rng, reviews.REVIEW_CUES[r], own["review", r], cfg, query, 2)
    text = rng.choice(_REVIEW_FRAMES).format(product=product, Product=_sentence(product), c1=c1,
                                             C1=_sentence(c1), c2=c2, C2=_sentence(c2))
    gold = rate(pref["habit"], r, category)
    if rng.random() < cfg.noise:  # off by one, inside 1..5
      step = rng.choice((-1, 1))
      gold = gold + step if 1 <= gold + step <= 5 else gold - step
    return Draw({"text": text, "score": str(gold)}, {"text": text}, str(gold),
                [f"{category}/{p}", f"review{r}/{i1}", f"review{r}/{i2}"],
                {"r": r, "category": category})

  @staticmethod
  def habit(pref) -> str:
    h = pref["habit"]
    if h["kind"] == "shift":
      return f"shift {h['bias']:+d}"
    if h["kind"] == "by_category":
      return "by category " + ", ".join(f"{c} {b:+d}" for c, b in sorted(h["bias"].items()))
    return h["kind"]


def _fitted_habit(history) -> dict:
  """The habit of the family that best explains the history (total absolute error), the simpler
  on ties (none, shifts, compress, extreme, then a shift per category)."""
  pairs = [(d.latent["r"], d.latent["category"], int(d.gold)) for d in history]
  candidates = [{"kind": "none"}] + [{"kind": "shift", "bias": b} for b in (-2, -1, 1, 2)]
  candidates += [{"kind": "compress"}, {"kind": "extreme"}]
  per_category = {}
  for category in sorted({c for _, c, _ in pairs}):
    mine = [(r, g) for r, c, g in pairs if c == category]
    per_category[category] = min(range(-2, 3), key=lambda b: (
        sum(abs(_clip(r + b) - g) for r, g in mine), abs(b)))
  candidates.append({"kind": "by_category", "bias": per_category})

  def error(habit):
    return sum(abs(rate(habit, r, c) - g) for r, c, g in pairs)
  return min(candidates, key=error)  # min keeps the first of equals: the simpler habit


def _rating_oracle(name, lat, ql) -> str:
  r, category = ql.latent["r"], ql.latent["category"]
  if name == "non_personalized":
    return str(r)
  habit = lat.pref["habit"] if name == "personalized" else _fitted_habit(lat.history)
  return str(rate(habit, r, category))


# --- LaMP_2M: the plausible tag highest in a personal order -------------------------------------

TASTE = 3.0  # scale of the personal Gumbel draw against the global log-popularity
HOME_WEIGHT = 3.0  # a home tag's weight against another tag's in a movie's plausible tags
_MOVIE_FRAMES = ("A film in which {cues}.", "{Cues}.", "The movie follows how {cues}.",
                 "In this picture {cues}.")


class _Tagging:

  @staticmethod
  def user(rng, task):
    scores = {t: -0.15 * i - TASTE * math.log(-math.log(rng.random() or 1e-12))
              for i, t in enumerate(task.labels)}
    return {"scores": scores, "prior": {t: -i for i, t in enumerate(task.labels)},
            "home": rng.sample(list(task.labels), 6),
            "own": _halves(rng, movies.MOVIE_CUES)}

  @staticmethod
  def draw(rng, task, pref, cfg, query):
    weights = {t: HOME_WEIGHT if t in pref["home"] else 1.0 for t in task.labels}
    plausible = []
    for _ in range(rng.randint(2, 5)):  # weighted draws without replacement
      left = [t for t in task.labels if t not in plausible]
      plausible.append(rng.choices(left, [weights[t] for t in left])[0])
    cues, used = [], []
    for tag in plausible:
      [(cue, i)] = _phrases(rng, movies.MOVIE_CUES[tag], pref["own"][tag], cfg, query)
      cues.append(cue)
      used.append(f"{tag}/{i}")
    rng.shuffle(cues)  # the order says nothing about the gold
    joined = ", ".join(cues[:-1]) + " and " + cues[-1]
    text = rng.choice(_MOVIE_FRAMES).format(cues=joined, Cues=_sentence(joined))
    gold = max(plausible, key=pref["scores"].get)
    if rng.random() < cfg.noise:
      gold = rng.choice([t for t in plausible if t != gold])
    return Draw({"description": text, "tag": gold}, {"text": text}, gold, used,
                {"plausible": plausible})

  @staticmethod
  def habit(pref) -> str:
    return max(pref["scores"], key=pref["scores"].get)


# The latents are those of the first kind's labeling (plausible tags, prior, scores): its oracle.
_tagging_oracle = synth_makers.ORACLES["LaMP_2M"]


# --- LaMP_5: the method and the problem in the user's title template ----------------------------

TEMPLATES = {
    "plain": "{m} for {p}",
    "towards": "towards {p} with {m}",
    "question": "can {m} improve {p}?",
    "colon": "{p}: a {m} approach",
    "via": "improving {p} via {m}",
    "on": "on {m} for {p}",
}
DEFAULT_STYLE = {"template": "plain", "case": "sentence"}


def _titled(style: dict, method: str, problem: str) -> str:
  words = TEMPLATES[style["template"]].format(m=method, p=problem).split()
  if style["case"] == "title":
    return " ".join(w[0].upper() + w[1:] for w in words)
  return _sentence(" ".join(words))


class _Titling:

  @staticmethod
  def user(rng, task):
    topics = rng.sample(sorted(papers.RESEARCH), 2)
    families = {("frame",): papers.ABSTRACT_FRAMES, ("context",): papers.CONTEXT_FRAMES}
    for t in topics:
      families[t, "methods"] = papers.RESEARCH[t]["methods"]
      families[t, "problems"] = papers.RESEARCH[t]["problems"]
    return {"style": {"template": rng.choice(sorted(TEMPLATES)),
                      "case": rng.choice(("title", "sentence"))},
            "topics": topics, "own": _halves(rng, families)}

  @staticmethod
  def draw(rng, task, pref, cfg, query):
    topic, own = rng.choice(pref["topics"]), pref["own"]
    research = papers.RESEARCH[topic]
    [(method, mi)] = _phrases(rng, research["methods"], own[topic, "methods"], cfg, query)
    [(problem, pi)] = _phrases(rng, research["problems"], own[topic, "problems"], cfg, query)
    [(context, ci)] = _phrases(rng, papers.CONTEXT_FRAMES, own["context",], cfg, query)
    [(frame, fi)] = _phrases(rng, papers.ABSTRACT_FRAMES, own["frame",], cfg, query)
    result = rng.choice(papers.RESULT_SENTENCES)
    abstract = " ".join((_sentence(context.format(problem=problem)),
                         _sentence(frame.format(problem=problem, method=method)), result))
    style = DEFAULT_STYLE if rng.random() < cfg.noise else pref["style"]
    title = _titled(style, method, problem)
    return Draw({"abstract": abstract, "title": title}, {"text": abstract}, title,
                [f"{topic}/m{mi}", f"{topic}/p{pi}", f"context{ci}", f"frame{fi}"],
                {"method": method, "problem": problem, "style": style})

  @staticmethod
  def habit(pref) -> str:
    return f"{pref['style']['template']} template, {pref['style']['case']} case"


def _titling_oracle(name, lat, ql) -> str:
  if name == "non_personalized":
    style = DEFAULT_STYLE
  elif name == "personalized":
    style = lat.pref["style"]
  else:  # the most frequent template and case of the user's history
    seen = [d.latent["style"] for d in lat.history]
    style = {k: _mode([s[k] for s in seen]) for k in DEFAULT_STYLE}
  return _titled(style, ql.latent["method"], ql.latent["problem"])


def _mode(values: list) -> str:
  return max(sorted(set(values)), key=values.count)


MAKERS = {"LaMP_2M": _Tagging, "LaMP_3": _Rating, "LaMP_5": _Titling}
ORACLES = {"LaMP_2M": _tagging_oracle, "LaMP_3": _rating_oracle, "LaMP_5": _titling_oracle}
