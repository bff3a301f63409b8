"""What `synth` generates for each task: the per-task makers, their oracles, their word lists.

A maker draws a user's latent preference (`user`) and one item or query in that user's taste
(`draw`, a `Draw`); an oracle predicts a query's gold from the latents, as one of `synth`'s three
predictors. The `cfg` they take is `synth`'s generator settings (text_words, shift, noise).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math
import random
from typing import Any


@dataclasses.dataclass
class Draw:
  """One generated item: its LaMP fields, the gold, and the latents the oracles read."""

  fields: dict[str, str]  # the history item's fields (without id / date)
  slots: dict[str, str]  # the query's `input` slots
  gold: str
  topic_words: list[str]
  latent: dict[str, Any]


def _n_words(rng: random.Random, cfg, scale: float = 1.0) -> int:
  lo, hi = (cfg.text_words, cfg.text_words) if isinstance(cfg.text_words, int) else cfg.text_words
  return max(2, round(rng.randint(lo, hi) * scale))


def _topic_words(rng, vocab: Sequence[str], n: int, cfg, query: bool) -> list[str]:
  """n words of one topic: the core half for history, the fringe half with p=shift in queries."""
  half = len(vocab) // 2
  out: list[str] = []
  for _ in range(n):
    fringe = query and rng.random() < cfg.shift
    pool = vocab[half:] if fringe else vocab[:half]
    # Distinct words until the half runs out (titles read better), then repeats. One draw per
    # word whatever the pool, so `shift` never changes the draws that follow (the latents).
    choices = [w for w in pool if w not in out] or pool
    out.append(choices[int(rng.random() * len(choices))])
  return out


def _sentence(rng, content: list[str], filler_share: float = 0.35) -> str:
  words = list(content) + [rng.choice(FILLERS) for _ in range(round(len(content) * filler_share))]
  rng.shuffle(words)
  return " ".join(words).capitalize() + "."


def _first_distinct(text: str, n: int, skip: set[str]) -> list[str]:
  out = []
  for w in text.rstrip(".").lower().split():
    if w not in skip and w not in out:
      out.append(w)
      if len(out) == n:
        break
  return out


def _case(words: list[str], style: str) -> list[str]:
  if style == "title":
    return [w.capitalize() for w in words]
  if style == "sentence":
    return [w.capitalize() if i == 0 else w for i, w in enumerate(words)]
  return [w.lower() for w in words]


# --- LaMP_3: harsh and kind raters --------------------------------------------------------------


class _Rating:
  """LaMP_3: gold = clip(text sentiment + user bias, 1, 5)."""

  BIASES = ((-2, 0.15), (-1, 0.25), (0, 0.30), (1, 0.30))
  SCORES = (0.10, 0.15, 0.20, 0.25, 0.30)  # text sentiment 1..5; real reviews skew positive
  # (strong positive, mild positive, mild negative, strong negative) word counts per sentiment
  MIX = {5: (2, 1, 0, 0), 4: (1, 2, 0, 0), 3: (0, 1, 1, 0), 2: (0, 0, 2, 1), 1: (0, 0, 1, 2)}

  @staticmethod
  def user(rng, task):
    bias = rng.choices([b for b, _ in _Rating.BIASES], [p for _, p in _Rating.BIASES])[0]
    return {"bias": bias, "topics": rng.sample(PRODUCT_DOMAINS, 2)}

  @staticmethod
  def draw(rng, task, pref, cfg, query):
    s = rng.choices(range(1, 6), _Rating.SCORES)[0]
    topic = rng.choice(pref["topics"])
    content = _topic_words(rng, NEWS[topic], _n_words(rng, cfg), cfg, query)
    topic_words = list(content)
    for words, count in zip(SENTIMENT, _Rating.MIX[s]):
      content += rng.sample(words, count)
    gold = _clip(s + pref["bias"])
    if rng.random() < cfg.noise:
      gold = _clip(gold + rng.choice((-1, 1)))
    text = _sentence(rng, content)
    return Draw({"text": text, "score": str(gold)}, {"text": text}, str(gold), topic_words,
                 {"s": s})


def _clip(x: int) -> int:
  return min(5, max(1, x))


def _rating_oracle(name, lat, ql) -> str:
  s = ql.latent["s"]
  if name == "non_personalized":
    return str(s)
  if name == "personalized":
    return str(_clip(s + lat.pref["bias"]))
  # The bias that best explains the user's own history (MAE), smallest |b| on ties.
  pairs = [(d.latent["s"], int(d.gold)) for d in lat.history]
  bias = min(range(-2, 3), key=lambda b: (sum(abs(_clip(x + b) - g) for x, g in pairs), abs(b)))
  return str(_clip(s + bias))


# --- LaMP_2N / LaMP_2M: favourite labels among the plausible ones ------------------------------


class _Labeling:
  """Each text fits 2–3 of the user's 5 home labels; the user's favourite among them is gold."""

  TASTE = 3.0  # scale of the personal Gumbel draw against the global log-popularity

  @staticmethod
  def user(rng, task):
    # Popularity falls with the label's index, so the non-personalized task has a prior.
    scores = {l: -0.15 * i - _Labeling.TASTE * math.log(-math.log(rng.random() or 1e-12))
              for i, l in enumerate(task.labels)}
    prior = {l: -i for i, l in enumerate(task.labels)}
    return {"scores": scores, "prior": prior, "home": rng.sample(list(task.labels), 5)}

  @staticmethod
  def draw(rng, task, pref, cfg, query):
    plausible = rng.sample(pref["home"], rng.choice((2, 3)))
    vocab = NEWS if task.name == "LaMP_2N" else MOVIES
    n = _n_words(rng, cfg)
    content = []
    for label in plausible:  # Equal measure: the words cannot tell the gold apart.
      content += _topic_words(rng, vocab[label], max(1, n // len(plausible)), cfg, query)
    gold = max(plausible, key=pref["scores"].get)
    if rng.random() < cfg.noise:
      gold = rng.choice([l for l in plausible if l != gold])
    text = _sentence(rng, content)
    if task.name == "LaMP_2N":
      title = " ".join(_case(_first_distinct(text, 4, set(FILLERS)), "title"))
      fields = {"text": text, "title": title, "category": gold}
    else:
      fields = {"description": text, "tag": gold}
    return Draw(fields, {"text": text}, gold, list(content), {"plausible": plausible})


def _labeling_oracle(name, lat, ql) -> str:
  plausible = ql.latent["plausible"]
  order = lat.pref["prior"]
  if name == "non_personalized":
    return max(plausible, key=order.get)
  if name == "personalized":
    return max(plausible, key=lat.pref["scores"].get)
  # Head-to-head wins in the user's history among the labels plausible together; then popularity.
  wins = {l: 0 for l in plausible}
  for d in lat.history:
    if d.gold in wins and sum(l in wins for l in d.latent["plausible"]) > 1:
      wins[d.gold] += 1
  return max(plausible, key=lambda l: (wins[l], order[l]))


# --- LaMP_1: references from the user's own topic ----------------------------------------------


class _Citation:
  """History: the user's papers from its 2 home topics. Query: a title that mixes a home topic
  and another topic; the gold option is the home-topic one."""

  @staticmethod
  def user(rng, task):
    return {"topics": rng.sample(list(RESEARCH), 2)}

  @staticmethod
  def draw(rng, task, pref, cfg, query):
    home = rng.choice(pref["topics"])
    if not query:
      title_words = _topic_words(rng, RESEARCH[home], rng.randint(4, 7), cfg, False)
      content = _topic_words(rng, RESEARCH[home], _n_words(rng, cfg), cfg, False)
      fields = {"title": _title(rng, title_words), "abstract": _sentence(rng, content)}
      return Draw(fields, {}, "", title_words + content, {"topic": home})
    other = rng.choice([t for t in RESEARCH if t not in pref["topics"]])
    title_words = (_topic_words(rng, RESEARCH[home], 3, cfg, True)
                   + _topic_words(rng, RESEARCH[other], 3, cfg, True))
    rng.shuffle(title_words)
    options = [_title(rng, _topic_words(rng, RESEARCH[t], rng.randint(4, 6), cfg, True))
               for t in (home, other)]
    home_first = rng.random() < 0.5
    if not home_first:
      options.reverse()
    gold_first = home_first != (rng.random() < cfg.noise)
    slots = {"title": _title(rng, title_words), "option1": options[0], "option2": options[1]}
    topics = (home, other) if home_first else (other, home)
    return Draw({}, slots, "[1]" if gold_first else "[2]", title_words, {"topics": topics})


def _title(rng, words: list[str]) -> str:
  return " ".join(_case(words, "title"))


def _citation_oracle(name, lat, ql) -> str:
  topics = ql.latent["topics"]
  if name == "non_personalized":
    return "[1]"  # Both options are equally plausible without the user.
  known = lat.pref["topics"] if name == "personalized" else {d.latent["topic"] for d in lat.history}
  return "[1]" if topics[0] in known else "[2]"


# --- LaMP_4 / LaMP_5 / LaMP_6 / LaMP_7: styles --------------------------------------------------


class _Styled:
  """Outputs in the user's style: a signature prefix (LaMP_7: an opener, a closer, slang), a
  case style and, for titles, a length."""

  PREFIXES = {
      "LaMP_4": ("", "Breaking:", "Exclusive:", "Watch:", "Opinion:", "Update:"),
      "LaMP_5": ("", "Towards", "Rethinking", "On", "Learning", "Beyond"),
      "LaMP_6": ("", "Re:", "FYI:", "Quick question:", "[Action]", "Reminder:"),
      "LaMP_7": ("", "omg", "lol", "ugh", "honestly"),
  }
  CLOSERS = ("", ":)", "!!", "#blessed", "#tbt", "#fail")
  # Half the tweeters write these fillers their own way: a style ROUGE can see.
  SLANG = {"really": "rly", "people": "ppl", "very": "super", "today": "2day", "just": "jus",
           "with": "w/", "about": "abt", "this": "dis", "the": "da", "time": "tyme"}
  CASES = ("title", "sentence", "lower")
  LENGTHS = (3, 4, 6, 8)
  DEFAULT = {"prefix": "", "closer": "", "case": "sentence", "length": 5, "slang": False}

  @staticmethod
  def user(rng, task):
    vocab = RESEARCH if task.name == "LaMP_5" else NEWS
    return {"prefix": rng.choice(_Styled.PREFIXES[task.name]), "closer": rng.choice(_Styled.CLOSERS),
            "case": rng.choice(_Styled.CASES), "length": rng.choice(_Styled.LENGTHS),
            "slang": rng.random() < 0.5,
            "topics": rng.sample(list(vocab), 2)}

  @staticmethod
  def draw(rng, task, pref, cfg, query):
    vocab = RESEARCH if task.name == "LaMP_5" else NEWS
    scale = 0.5 if task.name == "LaMP_7" else 1.0
    topic = rng.choice(pref["topics"])
    content = _topic_words(rng, vocab[topic], _n_words(rng, cfg, scale), cfg, query)
    text = _sentence(rng, content, filler_share=0.5 if task.name == "LaMP_7" else 0.35)
    style = _Styled.DEFAULT if rng.random() < cfg.noise else pref
    out = _styled(task.name, text, style)
    fields = {"text": out} if task.name == "LaMP_7" else (
        {"abstract": text, "title": out} if task.name == "LaMP_5" else {"text": text, "title": out})
    return Draw(fields, {"text": text}, out, list(content), {"text": text, "style": style})


def _styled(task_name: str, text: str, style: dict[str, Any]) -> str:
  if task_name == "LaMP_7":
    words = text.rstrip(".").split()
    if style["slang"]:
      words = [_Styled.SLANG.get(w.lower(), w) for w in words]
    words = _case(words, style["case"])
    return " ".join(w for w in (style["prefix"], " ".join(words), style["closer"]) if w)
  words = _case(_first_distinct(text, style["length"], set(FILLERS)), style["case"])
  return " ".join(([style["prefix"]] if style["prefix"] else []) + words)


def _styled_oracle(task_name):
  def oracle(name, lat, ql) -> str:
    if name == "non_personalized":
      style = _Styled.DEFAULT
    elif name == "personalized":
      style = lat.pref
    else:  # Each style attribute's most common value in the user's history.
      style = {k: _mode([d.latent["style"][k] for d in lat.history]) for k in _Styled.DEFAULT}
    return _styled(task_name, ql.latent["text"], style)
  return oracle


def _mode(values: list[Any]) -> Any:
  return max(sorted(set(values), key=str), key=values.count)


# --- vocabularies: real words, so a pretrained model can relate a topic's core and fringe -------
# Each list: 6 core words (history) then 6 fringe words (shifted queries).

NEWS = {
    "food & drink": "recipe chef kitchen flavor wine dinner bakery spice cocktail brunch harvest pasta",
    "sports": "match team coach league goal season stadium playoff striker referee trophy tournament",
    "education": "school teacher student exam classroom college tuition curriculum lecture diploma campus homework",
    "parents": "toddler parenting baby nursery bedtime siblings daycare diaper playdate lullaby stroller adoption",
    "religion": "church faith prayer pastor scripture worship temple pilgrim sermon monk ritual sabbath",
    "travel": "flight hotel beach passport itinerary island luggage cruise resort backpack airport souvenir",
    "business": "market startup investor revenue merger profit shareholder quarterly retail ceo stocks earnings",
    "crime": "police suspect arrest robbery detective court burglary fraud verdict warrant prison homicide",
    "science & technology": "software robot laboratory physics satellite algorithm genome telescope smartphone quantum battery chip",
    "culture & arts": "museum painting gallery sculpture poetry theater opera novelist exhibition ballet artist orchestra",
    "entertainment": "celebrity movie album premiere actor concert sitcom festival rapper trailer reality streaming",
    "politics": "senate election governor campaign policy congress ballot lobbyist legislation debate voter treaty",
    "women": "feminist equality workplace sisterhood empowerment mentor suffrage maternity leadership harassment wage activist",
    "style & beauty": "fashion makeup runway hairstyle wardrobe designer lipstick skincare boutique jewelry manicure denim",
    "healthy living": "fitness workout nutrition yoga sleep wellness meditation jogging vitamins stretching hydration cardio",
}
MOVIES = {
    "sci-fi": "spaceship alien galaxy android planet laser starship cyborg wormhole asteroid mutant orbit",
    "based on a book": "novel author chapter adaptation bestseller memoir manuscript publisher trilogy paperback literary prose",
    "comedy": "jokes prank hilarious goofy laughs slapstick parody blunder wacky banter spoof zany",
    "action": "explosion chase gunfight stunt heist rescue ambush commando shootout pursuit sniper combat",
    "twist ending": "reveal secret mystery surprise deception clue illusion betrayal hoax unmasked revelation enigma",
    "dystopia": "regime surveillance rebellion wasteland oppression curfew propaganda totalitarian uprising rationing ruins dissident",
    "dark comedy": "morbid funeral cynical absurd macabre satire gallows corpse deadpan grim irony mischief",
    "classic": "vintage timeless legendary golden masterpiece iconic noir silent landmark celebrated enduring heritage",
    "psychology": "mind trauma therapist obsession memory identity paranoia delusion subconscious hypnosis anxiety psyche",
    "fantasy": "wizard dragon kingdom spell quest sorcerer elves enchanted prophecy amulet castle potion",
    "romance": "love wedding heartbreak kiss sweetheart passion courtship romantic proposal affair valentine soulmate",
    "thought-provoking": "philosophy existence morality meaning conscience question ethics dilemma reflection paradox truth purpose",
    "social commentary": "inequality poverty racism class injustice protest gentrification corruption privilege labor immigrant welfare",
    "violence": "brutal bloody massacre revenge murder gore torture slaughter savage stabbing carnage assault",
    "true story": "biography real historical documented veteran survivor chronicle testimony archive eyewitness autobiography factual",
}
RESEARCH = {
    "machine learning": "neural training gradient classifier embedding transformer regularization backpropagation overfitting convolutional attention pretraining",
    "databases": "query index transaction relational schema storage sql concurrency replication joins olap btree",
    "graphics": "rendering shading mesh texture lighting animation raytracing polygon shader voxel rasterization geometry",
    "security": "encryption attack malware privacy authentication vulnerability cryptographic phishing firewall intrusion exploit ransomware",
    "robotics": "robot manipulator locomotion grasping actuator navigation gripper odometry kinematics servo exoskeleton drone",
    "networking": "routing bandwidth protocol packet latency wireless congestion throughput router tcp multicast topology",
    "theory": "complexity approximation graph polynomial bound algorithmic hardness combinatorial randomized lemma reduction np",
    "bioinformatics": "protein gene sequencing genomic molecular cell dna expression phylogenetic rna enzyme mutation",
}
NEWS, MOVIES, RESEARCH = ({k: tuple(v.split()) for k, v in d.items()} for d in (NEWS, MOVIES, RESEARCH))
PRODUCT_DOMAINS = ("food & drink", "sports", "travel", "science & technology", "style & beauty",
                   "healthy living", "parents", "entertainment")
FILLERS = ("the", "a", "new", "with", "from", "about", "after", "this", "their", "more", "some",
           "really", "very", "just", "first", "today", "many", "people", "time", "week")
SENTIMENT = (
    ("excellent", "amazing", "perfect", "love", "outstanding", "fantastic", "wonderful"),
    ("good", "nice", "solid", "decent", "pleasant", "handy", "useful"),
    ("mediocre", "flimsy", "disappointing", "meh", "overpriced", "slow", "awkward"),
    ("terrible", "awful", "broken", "useless", "horrible", "worst", "refund"),
)

MAKERS = {"LaMP_1": _Citation, "LaMP_2N": _Labeling, "LaMP_2M": _Labeling, "LaMP_3": _Rating,
          "LaMP_4": _Styled, "LaMP_5": _Styled, "LaMP_6": _Styled, "LaMP_7": _Styled}
ORACLES = {"LaMP_1": _citation_oracle, "LaMP_2N": _labeling_oracle, "LaMP_2M": _labeling_oracle,
           "LaMP_3": _rating_oracle, "LaMP_4": _styled_oracle("LaMP_4"),
           "LaMP_5": _styled_oracle("LaMP_5"), "LaMP_6": _styled_oracle("LaMP_6"),
           "LaMP_7": _styled_oracle("LaMP_7")}
