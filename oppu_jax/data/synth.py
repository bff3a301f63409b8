"""A LaMP-format data generator with latent per-user preferences.

`generate(task, out_dir, ...)` writes the official time-based layout — `train_questions.json`,
`train_outputs.json`, `dev_questions.json`, `dev_outputs.json`: per user, the last half of its
queries (in time) are dev, the rest train; every record carries `user_id`, `date` and the user's
whole history (items dated before all of the user's queries). `write_oppu_layout(data, dir)`
writes OPPU's processed layout of the same data. Everything derives from `seed`
(`random.Random`, never global state).

What a personalized model can learn and a non-personalized one cannot:
- LaMP_3: the review's words show a sentiment s in 1..5 (counts of strong / mild, positive /
  negative words); each user has a bias b (harsh -2/-1, neutral 0, kind +1); gold = clip(s + b).
- LaMP_2N / LaMP_2M: each text mixes cue words of 2–3 plausible labels in equal measure; each
  user ranks the labels (global popularity + a personal draw); gold = the user's favourite among
  the plausible ones.
- LaMP_1: the query title mixes two research topics; each option comes from one of them; the gold
  is the option from the user's own (history) topic.
- LaMP_4 / LaMP_5 / LaMP_6: the headline / title / subject is the first L content words of the
  text in the user's style: a signature prefix, a case style, a length L.
- LaMP_7: the tweet is the neutral text in the user's style: an opener, a case style, a closer,
  and for half the users their own spelling of common words ("rly", "ppl", "w/").
With probability `noise` a gold ignores the preference (another plausible label, a ±1 rating,
the default style).

`shift` in [0, 1] is the behaviour shift: each topic's words are split into a core half (used by
the history) and a fringe half; a query word comes from the fringe with probability `shift`. At
shift=0 the queries share the history's vocabulary (BM25 finds related items); at shift=1 they
share none of it (retrieval degrades to chance) while the preference, tied to the topic and not
to the words, is unchanged.

`oracle_report(task, ...)` scores three predictors from the generator's latents: one that knows
only the text ("non_personalized"), one that estimates each user's preference from that user's
history ("from_history"), and one that knows it ("personalized"). With the defaults (seed 0,
noise 0.1, shift 0; 100 users = 200 queries, and 1000 users in brackets):

  task     metric    non_personalized  from_history    personalized
  LaMP_1   accuracy  0.540 (0.498)     0.875 (0.890)   0.880 (0.893)
  LaMP_2N  accuracy  0.440 (0.475)     0.780 (0.770)   0.875 (0.904)
  LaMP_2M  accuracy  0.490 (0.495)     0.725 (0.763)   0.890 (0.905)
  LaMP_3   MAE       0.590 (0.702)     0.090 (0.082)   0.090 (0.077)
  LaMP_3   RMSE      0.900 (0.984)     0.300 (0.286)   0.300 (0.278)
  LaMP_4   ROUGE-1   0.818 (0.817)     0.979 (0.982)   0.979 (0.982)
  LaMP_5   ROUGE-1   0.814 (0.819)     0.989 (0.980)   0.989 (0.980)
  LaMP_6   ROUGE-1   0.803 (0.809)     0.984 (0.978)   0.984 (0.979)
  LaMP_7   ROUGE-1   0.895 (0.895)     0.991 (0.987)   0.991 (0.988)

The figures are the same at shift 1: one seed draws the same latents at every shift (a word
costs the same draws from either half), so only the query words move, and with them the
generation golds' words. The share of a query's topic words found in its user's history
("query_history_overlap") falls from 0.97–1.00 at shift 0 (LaMP_1: 0.50, its titles mix in a
foreign topic) to about 0.5 at shift 0.5 and 0.00 at shift 1. ROUGE lower-cases, so case styles
are invisible to it; prefixes, lengths and slang are not. The oracles bound what is learnable;
they are not models.

A second kind, `kind="meaning"` (`synth_meaning`, LaMP_2M, LaMP_3 and LaMP_5), evokes labels,
ratings and methods through families of paraphrases, writes queries in phrasings their user's
history never used, and gives users habits beyond a constant shift: the data on which this
project's quality claims are checked (the recipe `configs/lampN.py:meaning`).
"""

from __future__ import annotations

from collections.abc import Collection
import dataclasses
import datetime
import math
import random
from typing import Any

from oppu_jax.data import lamp_write
from oppu_jax.data import synth_makers
from oppu_jax.data import synth_meaning
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.lamp_write import write_oppu_layout  # pylint: disable=unused-import
from oppu_jax.data.types import LampData, Query, User
from oppu_jax.errors import ConfigError


def generate(
    task: str,
    out_dir: str,
    *,
    num_users: int = 100,
    seed: int = 0,
    history_min: int = 5,
    history_max: int = 200,
    long_tail: bool = True,
    queries_per_user: int = 2,
    text_words: int | tuple[int, int] = (15, 30),
    shift: float = 0.0,
    noise: float = 0.1,
    kind: str = "words",
    dev_fraction: float = 0.5,
) -> LampData:
  """Writes a synthetic `task` data set in the official layout to `out_dir`; returns it. `kind`:
  "words" (this module's cues: shared words) or "meaning" (`synth_meaning`: paraphrases)."""
  data = synthesize(task, num_users=num_users, seed=seed, history_min=history_min,
                    history_max=history_max, long_tail=long_tail,
                    queries_per_user=queries_per_user, text_words=text_words, shift=shift,
                    noise=noise, kind=kind)
  lamp_write.write_official_layout(data, out_dir, dev_fraction=dev_fraction)
  return data


def synthesize(task: str, **kwargs: Any) -> LampData:
  """The data `generate` writes, in memory (same keyword arguments, no `out_dir`)."""
  return _build(task, _Config(**kwargs))[0]


def oracle_report(task: str, users: Collection[str] | None = None,
                  **kwargs: Any) -> dict[str, dict[str, float]]:
  """{metric: {"non_personalized", "from_history", "personalized": value}} on the queries of
  `users` (ids; None: every user), plus "query_history_overlap": the mean share of a query's
  topic words its user's history contains. Takes `synthesize`'s keyword arguments."""
  task_obj = tasks_lib.get_task(task)
  cfg = _Config(**kwargs)
  data, latents = _build(task, cfg)
  oracle = _tables(task_obj.name, cfg.kind)[1][task_obj.name]
  preds: dict[str, list[str]] = {k: [] for k in _PREDICTORS}
  golds, overlaps = [], []
  for user in data.users:
    if users is not None and user.id not in users:
      continue
    lat = latents[user.id]
    hist_words = {w for item in lat.history for w in item.topic_words}
    for q, ql in zip(user.queries, lat.queries):
      golds.append(q.gold)
      for name in _PREDICTORS:
        preds[name].append(oracle(name, lat, ql))
      if ql.topic_words:
        overlaps.append(sum(w in hist_words for w in ql.topic_words) / len(ql.topic_words))
  report = {m: {name: _score(m, preds[name], golds) for name in _PREDICTORS}
            for m in _METRICS[task_obj.metric]}
  report["query_history_overlap"] = {"mean": sum(overlaps) / max(len(overlaps), 1)}
  return report


def user_habits(task: str, **kwargs: Any) -> dict[str, str]:
  """{user id: the habit the generator gave the user} (`synthesize`'s keyword arguments): the
  truth an analysis compares adapters against. LaMP_3: the rating bias ("bias -1"); LaMP_2N/2M:
  the favourite home label; LaMP_1: the home topics; LaMP_4-7: the case style and length; the
  "meaning" kind: its habit (`synth_meaning`)."""
  name = tasks_lib.get_task(task).name
  cfg = _Config(**kwargs)
  _, latents = _build(name, cfg)
  out = {}
  for uid, lat in latents.items():
    p = lat.pref
    if cfg.kind == "meaning":
      out[uid] = synth_meaning.MAKERS[name].habit(p)
    elif name == "LaMP_3":
      out[uid] = f"bias {p['bias']:+d}"
    elif name in ("LaMP_2N", "LaMP_2M"):
      out[uid] = max(p["home"], key=lambda label: p["scores"][label])
    elif name == "LaMP_1":
      out[uid] = "+".join(sorted(p["topics"]))
    else:
      out[uid] = f"{p['case']} case, length {p['length']}"
  return out


# --- configuration and the user loop -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Config:
  num_users: int = 100
  seed: int = 0
  history_min: int = 5
  history_max: int = 200
  long_tail: bool = True
  queries_per_user: int = 2
  text_words: int | tuple[int, int] = (15, 30)
  shift: float = 0.0
  noise: float = 0.1
  kind: str = "words"  # words | meaning


KINDS = ("words", "meaning")


def check_kind(task_name: str, kind: str) -> None:
  """Raises ConfigError, one line, if the generator has no `kind` data for the task."""
  _tables(task_name, kind)


def _tables(task_name: str, kind: str) -> tuple[dict, dict]:
  """(makers, oracles) of the data kind; a one-line error for a kind or task it lacks."""
  if kind not in KINDS:
    raise ConfigError(f"config.data.synth.kind: unknown {kind!r}; expected one of "
                      f"{', '.join(KINDS)}")
  module = synth_makers if kind == "words" else synth_meaning
  if task_name not in module.MAKERS:
    raise ConfigError(f"config.data.synth.kind={kind!r} generates {', '.join(module.MAKERS)}, "
                      f"not {task_name}")
  return module.MAKERS, module.ORACLES


@dataclasses.dataclass
class _UserLatents:
  pref: dict[str, Any]
  history: list[synth_makers.Draw]
  queries: list[synth_makers.Draw]


def _build(task: str, cfg: _Config) -> tuple[LampData, dict[str, _UserLatents]]:
  task_obj = tasks_lib.get_task(task)
  rng = random.Random(f"{task_obj.name}/{cfg.seed}")
  maker = _tables(task_obj.name, cfg.kind)[0][task_obj.name]
  users, latents = [], {}
  for u in range(cfg.num_users):
    uid = f"u{u:04d}"
    pref = maker.user(rng, task_obj)
    n_hist = _history_length(rng, cfg)
    day = datetime.date(2015, 1, 1) + datetime.timedelta(days=rng.randrange(1500))
    history, hist_draws = [], []
    for k in range(n_hist):
      draw = maker.draw(rng, task_obj, pref, cfg, query=False)
      day += datetime.timedelta(days=rng.randint(1, 5))
      history.append({"id": f"{uid}_h{k:03d}", **draw.fields, "date": day.isoformat()})
      hist_draws.append(draw)
    queries, query_draws = [], []
    for j in range(cfg.queries_per_user):
      draw = maker.draw(rng, task_obj, pref, cfg, query=True)
      day += datetime.timedelta(days=rng.randint(1, 5))
      queries.append(Query(f"{uid}_q{j:02d}", tasks_lib.make_input(task_obj, **draw.slots),
                           draw.gold, day.isoformat()))
      query_draws.append(draw)
    users.append(User(uid, tuple(history), tuple(queries)))
    latents[uid] = _UserLatents(pref, hist_draws, query_draws)
  return LampData(task_obj.name, tuple(users)), latents


def _history_length(rng: random.Random, cfg: _Config) -> int:
  if not cfg.long_tail:
    return rng.randint(cfg.history_min, cfg.history_max)
  # Pareto with alpha 1.16 (the 80/20 rule): most users near the minimum, a few very active.
  return min(cfg.history_max, int(cfg.history_min * rng.paretovariate(1.16)))


# --- scoring --------------------------------------------------------------------------------------


_PREDICTORS = ("non_personalized", "from_history", "personalized")
_METRICS = {"classification": ("accuracy",), "regression": ("MAE", "RMSE"),
            "generation": ("ROUGE-1", "ROUGE-L")}


def _score(metric: str, preds: list[str], golds: list[str]) -> float:
  if metric == "accuracy":
    return sum(p == g for p, g in zip(preds, golds)) / len(golds)
  if metric in ("MAE", "RMSE"):
    errs = [float(p) - float(g) for p, g in zip(preds, golds)]
    if metric == "MAE":
      return sum(abs(e) for e in errs) / len(errs)
    return math.sqrt(sum(e * e for e in errs) / len(errs))
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  key = {"ROUGE-1": "rouge1", "ROUGE-L": "rougeL"}[metric]
  scorer = rouge_scorer.RougeScorer([key], use_stemmer=False)
  return sum(scorer.score(g, p)[key].fmeasure for p, g in zip(preds, golds)) / len(golds)
