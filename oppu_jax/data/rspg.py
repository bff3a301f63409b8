"""RSPG: choose a retriever per query (Salemi et al. 2024a), with a rule fitted on the training split.

The paper trains a model to predict, per input, which retriever's items make the LLM's output
best. Labelling that needs one LLM run per retriever per training query; ours labels without the
LLM, by a proxy of the same question — how well a retriever's top-k items' OUTPUTS already agree
with the gold (`utility`):
- LaMP_3 (ratings): minus |mean rating of the items - gold|;
- classification with labelled items (LaMP_2N, LaMP_2M): the share of items carrying the gold;
- otherwise (LaMP_1's gold reference title, generation tasks): the best unigram F1 between an
  item's output side and the gold text.
The rule: per query, features of the query and of the candidates' score distributions
(`FEATURES`); per candidate retriever a ridge-regression line predicting its utility; choose the
candidate with the highest prediction (the first listed on ties). Fitted in closed form on the
non-test users' queries with golds, saved as JSON. Pure numpy: the dense scorer is injected.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from oppu_jax.data import prompts as prompts_lib
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.errors import DataError

FEATURES = ("bias", "log_history", "log_query_words", "bm25_top", "bm25_margin", "dense_top",
            "dense_margin", "dated_share")


def features(query: str, texts: Sequence[str], dates: Sequence[Any],
             dense: Callable | None = None) -> np.ndarray:
  """The rule's inputs for one query over its visible history texts [len(FEATURES)]."""
  from oppu_jax.data.retrieval import bm25_scores  # here: retrieval imports this module's users

  def top_margin(scores):
    if len(scores) == 0:
      return 0.0, 0.0
    ordered = np.sort(np.asarray(scores, np.float64))[::-1]
    second = ordered[1] if len(ordered) > 1 else 0.0
    return float(ordered[0]), float(ordered[0] - second)

  bm25_top, bm25_margin = top_margin(bm25_scores(query, texts)) if texts else (0.0, 0.0)
  dense_top, dense_margin = top_margin(dense(query, texts)) if dense and texts else (0.0, 0.0)
  return np.array([1.0, math.log1p(len(texts)), math.log1p(len(query.split())),
                   math.log1p(max(bm25_top, 0.0)), math.log1p(max(bm25_margin, 0.0)), dense_top,
                   dense_margin, float(np.mean([d not in (None, "") for d in dates]))
                   if dates else 0.0])


def utility(task: tasks_lib.Task, query_input: str, gold: str, items: Sequence[dict]) -> float:
  """How well retrieved `items` already answer the query (the proxy label; see the docstring)."""
  if not items:
    return 0.0
  if task.metric == "regression":
    ratings = [float(item[task.output_field]) for item in items]
    return -abs(float(np.mean(ratings)) - float(gold))
  if task.labels and task.output_field:
    return float(np.mean([str(item[task.output_field]).strip() == gold.strip()
                          for item in items]))
  target = gold
  if task.name == "LaMP_1":  # the gold is "[1]" / "[2]": the reference it names
    slots = tasks_lib.parse_input(task, query_input)
    target = slots["option1" if "1" in gold else "option2"]
  side = (lambda item: str(item[task.output_field])) if task.output_field else (
      lambda item: prompts_lib.corpus_text(task, item))
  return max(_unigram_f1(side(item), target) for item in items)


def _unigram_f1(a: str, b: str) -> float:
  x, y = Counter(a.lower().split()), Counter(b.lower().split())
  common = sum((x & y).values())
  if not common:
    return 0.0
  precision, recall = common / sum(x.values()), common / sum(y.values())
  return 2 * precision * recall / (precision + recall)


@dataclasses.dataclass(frozen=True)
class Selector:
  """candidates: retriever names; weights [len(candidates), len(FEATURES)]."""

  candidates: tuple[str, ...]
  weights: np.ndarray

  def choose(self, query: str, texts: Sequence[str], dates: Sequence[Any],
             dense: Callable | None = None) -> str:
    predicted = self.weights @ features(query, texts, dates, dense)
    return self.candidates[int(np.argmax(predicted))]

  def to_json(self) -> dict:
    return {"candidates": list(self.candidates), "features": list(FEATURES),
            "weights": self.weights.tolist()}

  @classmethod
  def from_json(cls, doc: dict, source: str = "rspg.json") -> "Selector":
    if doc.get("features") != list(FEATURES):
      raise DataError(f"{source}: fitted on features {doc.get('features')}, this version reads "
                      f"{list(FEATURES)}; delete it to fit again")
    weights = np.asarray(doc["weights"], np.float64)
    if weights.shape != (len(doc["candidates"]), len(FEATURES)):
      raise DataError(f"{source}: weights of shape {list(weights.shape)} do not fit "
                      f"{len(doc['candidates'])} candidates")
    return cls(tuple(doc["candidates"]), weights)

  def save(self, path: str) -> None:
    from oppu_jax import files

    files.write_json(path, self.to_json())

  @classmethod
  def load(cls, path: str) -> "Selector":
    with open(path) as f:
      return cls.from_json(json.load(f), path)


def fit(rows: Sequence[tuple[np.ndarray, dict[str, float]]], candidates: Sequence[str],
        ridge: float = 1.0) -> Selector:
  """rows: (features, {candidate: utility}) per training query -> the fitted Selector. Ridge
  regression per candidate, the bias unpenalised; deterministic (closed form)."""
  if not rows:
    raise DataError("RSPG has no training queries: the non-test users have no queries with golds")
  x = np.stack([r[0] for r in rows])
  penalty = ridge * np.eye(x.shape[1])
  penalty[0, 0] = 0.0
  weights = []
  for name in candidates:
    y = np.array([r[1][name] for r in rows])
    weights.append(np.linalg.solve(x.T @ x + penalty + 1e-9 * np.eye(x.shape[1]), x.T @ y))
  return Selector(tuple(candidates), np.stack(weights))
