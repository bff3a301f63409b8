"""Is one setting significantly better than another on the same queries?

The OPPU paper marks a significant improvement with "*" in its Table 1. Here, per metric:
- accuracy, MAE, RMSE, ROUGE-1, ROUGE-L: a two-sided paired t-test over queries on what the
  metric averages (`metrics.query_scores`: correctness, absolute error, squared error,
  F-measure);
- F1 (macro over labels, not a mean over queries): a two-sided paired randomization test — each
  round swaps the two settings' predictions on a random half of the queries, and p is the share of
  rounds whose F1 difference is at least the observed one (+1 smoothing); the rounds draw from
  `seed`, so a rerun gives the same p.
"Better" means p < ALPHA and a difference in the metric's good direction.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses

import numpy as np
from scipy import stats

from oppu_jax.data import tasks
from oppu_jax.eval import metrics

ALPHA = 0.05
RANDOMIZATION_ROUNDS = 10_000


@dataclasses.dataclass(frozen=True)
class Test:
  """One metric's comparison of a setting against a reference setting."""

  metric: str
  p: float
  better: bool  # significantly better than the reference
  method: str  # "paired t-test" | "paired randomization"


def compare(task_name: str, golds: Mapping[str, str], preds: Mapping[str, str],
            reference: Mapping[str, str], *, seed: int = 0) -> dict[str, Test]:
  """{metric: Test} of `preds` against `reference` on the ids of `golds`."""
  scores = _Scores(task_name, golds)
  return scores.compare(scores.of(preds), scores.of(reference), seed)


class _Scores:
  """Per-query scores (and, for F1, label indices) of one task's predictions, computed once per
  prediction set however many comparisons read them (ROUGE per query is the costly part)."""

  def __init__(self, task_name: str, golds: Mapping[str, str]):
    self.task_name, self.golds = task_name, golds
    self.task = tasks.get_task(task_name)
    self.gold_labels = self._labels(golds)

  def of(self, preds: Mapping[str, str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    return metrics.query_scores(self.task_name, self.golds, preds), self._labels(preds)

  def compare(self, mine, theirs, seed: int) -> dict[str, Test]:
    out = {m: _t_test(m, mine[0][m], theirs[0][m]) for m in mine[0]}
    if self.gold_labels is not None:
      out["f1"] = _f1_randomization(self.gold_labels, mine[1], theirs[1], len(self.task.labels),
                                    seed)
    return out

  def _labels(self, strings: Mapping[str, str]) -> np.ndarray | None:
    if self.task.metric != "classification":
      return None
    return metrics.label_indices([strings[i] for i in self.golds], self.task.labels)


def _t_test(metric: str, mine: np.ndarray, theirs: np.ndarray) -> Test:
  diff = mine - theirs
  if len(diff) < 2 or not np.any(diff):  # no evidence either way (scipy would give nan)
    return Test(metric, 1.0, False, "paired t-test")
  if np.all(diff == diff[0]):  # the same nonzero difference on every query: t is infinite
    p = 0.0
  else:
    p = float(stats.ttest_rel(mine, theirs).pvalue)
  return Test(metric, p, p < ALPHA and _good(metric, float(np.mean(diff))), "paired t-test")


def _f1_randomization(gold: np.ndarray, mine: np.ndarray, theirs: np.ndarray, n_labels: int,
                      seed: int) -> Test:
  observed = metrics.f1_macro(gold, mine, n_labels) - metrics.f1_macro(gold, theirs, n_labels)
  if observed == 0 and np.array_equal(mine, theirs):
    return Test("f1", 1.0, False, "paired randomization")
  swap = np.random.default_rng(seed).random((RANDOMIZATION_ROUNDS, len(gold))) < 0.5
  a = np.where(swap, theirs[None], mine[None])
  b = np.where(swap, mine[None], theirs[None])
  diffs = _f1_rows(gold, a, n_labels) - _f1_rows(gold, b, n_labels)
  # A small tolerance: equal F1s computed in another order must count as "at least as large".
  extreme = np.sum(np.abs(diffs) >= abs(observed) - 1e-12)
  p = float((extreme + 1) / (RANDOMIZATION_ROUNDS + 1))
  return Test("f1", p, p < ALPHA and observed > 0, "paired randomization")


def _f1_rows(gold: np.ndarray, preds: np.ndarray, n_labels: int) -> np.ndarray:
  """`metrics.f1_macro` of each row of preds [R, n] against gold [n]."""
  total = np.zeros(len(preds))
  for c in range(n_labels):
    true_c = gold == c  # [n]
    pred_c = preds == c  # [R, n]
    tp = (pred_c & true_c[None]).sum(axis=1)
    denom = true_c.sum() + pred_c.sum(axis=1)
    total += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
  return total / n_labels if n_labels else total


def _good(metric: str, mean_diff: float) -> bool:
  return metrics.better_sign(metric) * mean_diff > 0


@dataclasses.dataclass(frozen=True)
class GridTests:
  """Every setting of a run against the non-personalized baseline and the best RAG setting
  (None where the run lacks it). vs_*: {setting: {metric: Test}}, the reference itself absent."""

  baseline: str | None
  best_rag: str | None
  vs_baseline: dict[str, dict[str, Test]]
  vs_best_rag: dict[str, dict[str, Test]]

  def to_json(self) -> dict:
    as_dict = lambda tests: {s: {m: dataclasses.asdict(t) for m, t in by_m.items()}
                             for s, by_m in tests.items()}
    return {"alpha": ALPHA, "baseline": self.baseline, "best_rag": self.best_rag,
            "vs_baseline": as_dict(self.vs_baseline), "vs_best_rag": as_dict(self.vs_best_rag)}


def grid_tests(task_name: str, golds: Mapping[str, str],
               preds: Mapping[str, Mapping[str, str]], results: Mapping[str, Mapping[str, float]],
               *, baseline: str = "non_personalized", rag_prefix: str = "rag_",
               seed: int = 0) -> GridTests:
  """The tests of results.md. The best RAG setting is the one with the best first metric
  (accuracy, MAE or ROUGE-1) among the settings named `rag_prefix`*."""
  rags = [s for s in preds if s.startswith(rag_prefix)]
  best_rag = None
  if rags:
    best_rag = metrics.best({s: results[s] for s in rags})
  scores = _Scores(task_name, golds)
  of = {s: scores.of(p) for s, p in preds.items()}
  against = lambda ref: {} if ref is None else {
      s: scores.compare(of[s], of[ref], seed) for s in preds if s != ref}
  base = baseline if baseline in preds else None
  return GridTests(base, best_rag, against(base), against(best_rag))
