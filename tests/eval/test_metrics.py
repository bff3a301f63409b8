import json
import math
import random

import numpy as np
import pytest
from rouge_score import rouge_scorer

from oppu_jax.errors import DataError
from oppu_jax.eval import metrics


def _f1_reference(y_true, y_pred, n_labels):
  """sklearn's per-class precision/recall/F with zero_division -> 0, written as loops."""
  scores = []
  for c in range(n_labels):
    tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
    n_pred = sum(p == c for p in y_pred)
    n_true = sum(t == c for t in y_true)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_true if n_true else 0.0
    scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
  return sum(scores) / n_labels


def test_classification_hand_computed():
  labels = ["[1]", "[2]"]
  golds = ["[1]", "[1]", "[2]", "[2]"]
  preds = [" [1] ", "[2]", "[2]", "garbage"]
  out = metrics.classification_metrics(golds, preds, labels)
  assert out["accuracy"] == 0.5
  # [1]: TP 1, FP 0, FN 1 -> 2/3; [2]: TP 1, FP 1, FN 1 -> 1/2.
  assert out["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_f1_is_macro_over_all_labels_with_zero_for_absent():
  labels = ["a", "b", "c", "d"]
  # c and d never occur as gold or prediction: they count as 0 in the mean.
  out = metrics.classification_metrics(["a", "b"], ["a", "b"], labels)
  assert out == {"accuracy": 1.0, "f1": 0.5}
  # Two unknown strings map to -1 and agree for accuracy (the reference's behaviour),
  # but -1 is no class for F1.
  out = metrics.classification_metrics(["zz", "a"], ["yy", "a"], labels)
  assert out["accuracy"] == 1.0 and out["f1"] == 0.25


def test_f1_random_against_loops_and_sklearn_if_present():
  rng = random.Random(0)
  for _ in range(200):
    n_labels = rng.randint(1, 6)
    n = rng.randint(1, 30)
    y_true = [rng.randint(-1, n_labels - 1) for _ in range(n)]
    y_pred = [rng.randint(-1, n_labels - 1) for _ in range(n)]
    ours = metrics.f1_macro(np.array(y_true), np.array(y_pred), n_labels)
    assert ours == pytest.approx(_f1_reference(y_true, y_pred, n_labels), abs=1e-12)
  try:
    from sklearn.metrics import f1_score  # Optional: not a dependency.
  except ImportError:
    return
  for _ in range(50):
    n_labels, n = rng.randint(1, 6), rng.randint(1, 30)
    y_true = [rng.randint(-1, n_labels - 1) for _ in range(n)]
    y_pred = [rng.randint(-1, n_labels - 1) for _ in range(n)]
    ref = f1_score(y_true, y_pred, labels=list(range(n_labels)), average="macro",
                   zero_division=0)
    assert metrics.f1_macro(np.array(y_true), np.array(y_pred), n_labels) == pytest.approx(ref)


def test_rating_parse_and_fallback():
  assert metrics.parse_rating(" 4 ", 2.0) == 4.0
  assert metrics.parse_rating("4.5", 2.0) == 4.5
  # Unparsable: the farther of 1 and 5 from the gold; a tie (gold 3) gives 5.
  assert metrics.parse_rating("four", 1.0) == 5.0
  assert metrics.parse_rating("four", 2.0) == 5.0
  assert metrics.parse_rating("four", 3.0) == 5.0
  assert metrics.parse_rating("four", 4.0) == 1.0
  assert metrics.parse_rating("", 5.0) == 1.0


@pytest.mark.parametrize("pred", ["nan", "inf", "-inf", "1e400", "3.5e38", "0", "6", "-3", "5.01"])
def test_rating_off_the_scale_or_not_finite_counts_as_unparsable(pred):
  # The reference's float() lets these through (nan/inf break its metric; 0 and 6 score by
  # distance); here they are the farther end of the scale, like any text.
  assert metrics.parse_rating(pred, 2.0) == metrics.parse_rating("four", 2.0) == 5.0
  assert metrics.parse_rating(pred, 4.0) == 1.0
  out = metrics.rating_metrics(["2", "4"], [pred, pred])
  assert out == {"mae": 3.0, "rmse": 3.0}


def test_rating_on_the_scale_counts_as_its_number():
  assert metrics.parse_rating("4.0", 1.0) == 4.0
  assert metrics.parse_rating(" 1 ", 5.0) == 1.0
  assert metrics.parse_rating("5", 1.0) == 5.0
  assert metrics.parse_rating("2.5", 1.0) == 2.5


def test_rating_metrics_plain_arithmetic():
  golds = ["1", "3", "5", "2", " 4"]
  preds = ["2", "3", "x", "5.0", "4 "]
  out = metrics.rating_metrics(golds, preds)
  errors = [1, 0, 4, 3, 0]  # "x" against gold 5 counts as 1.
  assert out["mae"] == pytest.approx(sum(errors) / 5)
  assert out["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 5))
  with pytest.raises(ValueError, match="gold rating 'bad' of id 'q1'"):
    metrics.evaluate("LaMP_3", {"q0": "1", "q1": "bad"}, {"q0": "1", "q1": "2"})


def test_generation_against_direct_rouge_score():
  golds = ["The cat sat on the mat", "a new headline for you", "Deep learning for ranking"]
  preds = ["the cat sat", "  completely different  ", "Deep Ranking Learning"]
  scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
  s = [scorer.score(g.strip(), p.strip()) for g, p in zip(golds, preds)]
  out = metrics.generation_metrics(golds, preds)
  assert out["rouge-1"] == pytest.approx(sum(x["rouge1"].fmeasure for x in s) / 3)
  assert out["rouge-L"] == pytest.approx(sum(x["rougeL"].fmeasure for x in s) / 3)
  # Hand check of the first: 3 of 6 gold unigrams, all 3 predicted -> P 1, R 1/2, F 2/3.
  assert s[0]["rouge1"].fmeasure == pytest.approx(2 / 3)
  # No stemming: "ranking" vs "ranks" do not match.
  one = metrics.generation_metrics(["ranking"], ["ranks"])
  assert one == {"rouge-1": 0.0, "rouge-L": 0.0}


def test_evaluate_dispatch_and_names():
  assert set(metrics.evaluate("LaMP_2M", {"a": "comedy"}, {"a": "comedy"})) == {"accuracy", "f1"}
  assert set(metrics.evaluate("LaMP_3", {"a": "3"}, {"a": "3"})) == {"mae", "rmse"}
  for task in ("LaMP_4", "LaMP_5", "LaMP_6", "LaMP_7"):
    assert set(metrics.evaluate(task, {"a": "x y"}, {"a": "x"})) == {"rouge-1", "rouge-L"}
  out = metrics.evaluate("LaMP_2N", {"a": "sports", "b": "crime"}, {"b": "crime", "a": "women"})
  assert out["accuracy"] == 0.5
  assert out["f1"] == pytest.approx(1 / 15)  # crime: 1; sports, women: 0; 12 absent: 0
  with pytest.raises(ValueError, match="unknown task 'LaMP_9'"):
    metrics.evaluate("LaMP_9", {"a": "x"}, {"a": "x"})


def test_evaluate_id_mismatch_names_an_id():
  with pytest.raises(ValueError, match="no prediction for id 'b'"):
    metrics.evaluate("LaMP_1", {"a": "[1]", "b": "[2]"}, {"a": "[1]"})
  with pytest.raises(ValueError, match="prediction for unknown id 'c'"):
    metrics.evaluate("LaMP_1", {"a": "[1]"}, {"a": "[1]", "c": "[2]"})
  with pytest.raises(ValueError, match="no gold ids"):
    metrics.evaluate("LaMP_1", {}, {})


def test_a_predictions_file_missing_an_id_fails_naming_it(tmp_path):
  from oppu_jax.data import lamp
  path = tmp_path / "pred.json"
  path.write_text(json.dumps({"task": "LaMP_3", "golds": [{"id": "q1", "output": "4"},
                                                          {"id": "q3", "output": "2"}]}))
  with pytest.raises(DataError, match=r"no prediction for id 'q2' \(1 of 3 gold ids missing\)"):
    metrics.evaluate("LaMP_3", {"q1": "4", "q2": "5", "q3": "1"}, lamp.read_outputs(str(path)))
  path.write_text(json.dumps({"task": "LaMP_3", "golds": [{"output": "4"}]}))
  with pytest.raises(DataError, match=r"pred.json: gold 0 \(id None\): missing field 'id'"):
    lamp.read_outputs(str(path))


def test_label_lists_are_the_official_evaluators():
  # Copied from LaMP's evaluator: F1's classes are these indices, so the order matters.
  from oppu_jax.data import tasks
  assert tasks.get_task("LaMP_1").labels == ("[1]", "[2]")
  assert list(tasks.get_task("LaMP_2N").labels) == [
      "food & drink", "sports", "education", "parents", "religion", "travel", "business",
      "crime", "science & technology", "culture & arts", "entertainment", "politics", "women",
      "style & beauty", "healthy living"]
  assert list(tasks.get_task("LaMP_2M").labels) == [
      "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia",
      "dark comedy", "classic", "psychology", "fantasy", "romance", "thought-provoking",
      "social commentary", "violence", "true story"]
