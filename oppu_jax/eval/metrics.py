"""LaMP metrics with the official evaluator's semantics, without `evaluate`.

- Predictions and golds are stripped.
- Classification (LaMP_1, LaMP_2N, LaMP_2M): each string maps to its index in the task's label
  list (`oppu_jax.data.tasks`, in the evaluator's order), anything else to -1; accuracy
  compares the indices (so, as in the reference, two unknown strings agree); F1 is sklearn's
  `f1_score(labels=range(L), average="macro")`: the mean over ALL L labels, a label with no
  gold and no prediction scoring 0 (sklearn's default zero_division="warn" -> 0).
- LaMP_3: a prediction counts as its number only when it parses with Python's `float` as a
  finite value within the scale [1, 5] ("4.0" counts as 4, "4.5" as 4.5); anything else counts
  as the reference's unparsable answer, whichever of 1 and 5 is farther from the gold (5 when
  the gold is 3, as the reference's `>` picks). MAE and RMSE. The reference parses with `float`
  alone, so it departs from this on what it lets through: "nan", "inf", "-inf" and "1e400"
  (inf) make its metric crash or report nan / inf, "3.5e38" gives an absurd error, and "0" / "6"
  score by their distance 0 / 6 from the gold; here all of these are the worst answer on the
  scale, like text.
- Generation (LaMP_4–7): ROUGE-1 and ROUGE-L F-measure of `rouge_score` without stemmer,
  averaged over samples. The reference's `evaluate` reports the median of 1000 unseeded
  bootstrap means instead, which differs from this mean only by resampling noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import numpy as np
from rouge_score import rouge_scorer

from oppu_jax.data import tasks
from oppu_jax.errors import DataError

# Error metrics; for every other metric higher is better. The one place that says which way.
LOWER_IS_BETTER = ("mae", "rmse")


def better_sign(metric: str) -> int:
  """+1 when higher is better, -1 when lower is (MAE, RMSE): gain = sign * (new - old)."""
  return -1 if metric in LOWER_IS_BETTER else 1


def best(results: Mapping[Any, Mapping[str, float]]) -> Any:
  """The key of `results` ({key: {metric: value}}) with the best first metric (accuracy, MAE or
  ROUGE-1), the earliest on a tie."""
  first = next(iter(next(iter(results.values()))))
  return max(results, key=lambda k: better_sign(first) * results[k][first])


def evaluate(
    task_name: str, golds: Mapping[str, str], preds: Mapping[str, str]
) -> dict[str, float]:
  """Metrics of one task: {accuracy, f1} | {mae, rmse} | {rouge-1, rouge-L}.

  golds, preds: id -> output string; the id sets must be equal.
  """
  task, g, p, ids = _aligned(task_name, golds, preds)
  if task.metric == "classification":
    return classification_metrics(g, p, task.labels)
  if task.metric == "regression":
    return rating_metrics(g, p, ids)
  return generation_metrics(g, p)


def query_scores(
    task_name: str, golds: Mapping[str, str], preds: Mapping[str, str]
) -> dict[str, np.ndarray]:
  """Per query (in `golds` order), what each metric averages: accuracy -> 1 or 0, mae -> the
  absolute error, rmse -> the squared error (RMSE is the root of its mean), rouge-1 / rouge-L ->
  the F-measure. F1 is no mean over queries and is absent; see `label_indices`. The same id
  checks as `evaluate`; the paired significance tests read these."""
  task, g, p, ids = _aligned(task_name, golds, preds)
  if task.metric == "classification":
    return {"accuracy": (label_indices(g, task.labels) == label_indices(p, task.labels))
            .astype(np.float64)}
  if task.metric == "regression":
    errors = rating_errors(g, p, ids)
    return {"mae": np.abs(errors), "rmse": errors ** 2}
  r1, rl = rouge_per_query(g, p)
  return {"rouge-1": r1, "rouge-L": rl}


def label_indices(strings: Sequence[str], labels: Sequence[str]) -> np.ndarray:
  """Each stripped string's index in `labels`, -1 for anything else (the evaluator's mapping)."""
  index = {label: i for i, label in enumerate(labels)}
  return np.array([index.get(str(s).strip(), -1) for s in strings], np.int64)


def classification_metrics(
    golds: Sequence[str], preds: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
  """Accuracy and macro F1 over all `labels` of stripped strings mapped to label indices."""
  y_true, y_pred = label_indices(golds, labels), label_indices(preds, labels)
  return {"accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
          "f1": f1_macro(y_true, y_pred, len(labels))}


def f1_macro(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
  """Mean over classes 0..n_labels-1 of 2TP / (2TP + FP + FN); 0 where that is 0/0.

  Values outside the classes (-1: unknown string) are never a class: as a prediction they are
  a false negative of the gold's class, as a gold a false positive of the predicted class.
  """
  classes = np.arange(n_labels)[:, None]  # [L, 1]
  true_c = np.asarray(y_true)[None, :] == classes  # [L, n]
  pred_c = np.asarray(y_pred)[None, :] == classes  # [L, n]
  tp = (true_c & pred_c).sum(axis=1)
  denom = true_c.sum(axis=1) + pred_c.sum(axis=1)  # = 2TP + FP + FN
  f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
  return float(f1.mean()) if n_labels else 0.0


def rating_metrics(
    golds: Sequence[str], preds: Sequence[str], ids: Sequence[str] | None = None
) -> dict[str, float]:
  """MAE and RMSE of ratings; `ids` only name the record in the error for a bad gold."""
  errors = rating_errors(golds, preds, ids)
  if not len(errors):
    return {"mae": 0.0, "rmse": 0.0}
  return {"mae": float(np.mean(np.abs(errors))), "rmse": float(math.sqrt(np.mean(errors ** 2)))}


def rating_errors(
    golds: Sequence[str], preds: Sequence[str], ids: Sequence[str] | None = None
) -> np.ndarray:
  """prediction - gold per query, the prediction read by `parse_rating`."""
  g = np.array([_gold_rating(s, ids[i] if ids else i) for i, s in enumerate(golds)])
  p = np.array([parse_rating(s, gold) for s, gold in zip(preds, g)])
  return p - g


def parse_rating(pred: str, gold: float) -> float:
  """float(pred.strip()) when that is finite and within [1, 5]; otherwise (unparsable, nan,
  inf, overflow, off the scale) the farther of 1 and 5 from `gold`."""
  try:
    value = float(str(pred).strip())
  except ValueError:
    value = math.nan
  if 1.0 <= value <= 5.0:  # False for nan: comparisons with nan fail.
    return value
  return 1.0 if abs(1 - gold) > abs(5 - gold) else 5.0


def generation_metrics(golds: Sequence[str], preds: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1 and ROUGE-L F-measure (rouge-score, no stemmer, its default tokenizer)."""
  r1, rl = rouge_per_query(golds, preds)
  if not len(r1):
    return {"rouge-1": 0.0, "rouge-L": 0.0}
  return {"rouge-1": float(np.mean(r1)), "rouge-L": float(np.mean(rl))}


def rouge_per_query(golds: Sequence[str], preds: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(ROUGE-1, ROUGE-L) F-measure of each stripped (gold, prediction) pair."""
  scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
  r1, rl = [], []
  for g, p in zip(golds, preds):
    s = scorer.score(str(g).strip(), str(p).strip())  # (target, prediction)
    r1.append(s["rouge1"].fmeasure)
    rl.append(s["rougeL"].fmeasure)
  return np.array(r1, np.float64), np.array(rl, np.float64)


def _aligned(task_name, golds, preds):
  """(task, golds, preds, ids) in `golds` order, after the id checks."""
  # The registry holds the label lists and the metric family; an unknown task fails first.
  task = tasks.get_task(task_name)
  if not golds:
    raise DataError(f"{task.name}: no gold ids to evaluate")
  missing = [i for i in golds if i not in preds]
  if missing:
    raise DataError(f"{task.name}: no prediction for id {missing[0]!r} "
                    f"({len(missing)} of {len(golds)} gold ids missing)")
  extra = [i for i in preds if i not in golds]
  if extra:
    raise DataError(f"{task.name}: prediction for unknown id {extra[0]!r} "
                    f"({len(extra)} ids without a gold)")
  ids = list(golds)
  return task, [golds[i] for i in ids], [preds[i] for i in ids], ids


def _gold_rating(s: str, where) -> float:
  try:
    return float(str(s).strip())
  except ValueError:
    raise DataError(f"gold rating {s!r} of id {where!r} is not a number") from None
