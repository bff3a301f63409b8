import itertools
import math

import numpy as np
import pytest
from scipy import stats

from oppu_jax.eval import metrics, significance


def _hand_t_test_p(a, b):
  """Two-sided paired t-test written out: t = mean(d) / (sd(d) / sqrt(n)), n - 1 dof."""
  d = np.asarray(a, float) - np.asarray(b, float)
  n = len(d)
  t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
  return 2 * stats.t.sf(abs(t), n - 1)


def test_t_test_on_absolute_and_squared_errors_for_rating():
  golds = {f"q{i}": g for i, g in enumerate("1234512345")}
  good = {f"q{i}": p for i, p in enumerate("1234512344")}  # one error of 1
  bad = {f"q{i}": p for i, p in enumerate("2345523455")}  # mostly off by one
  tests = significance.compare("LaMP_3", golds, good, bad)
  abs_good = [0] * 9 + [1]
  abs_bad = [1, 1, 1, 1, 0, 1, 1, 1, 1, 0]
  assert tests["mae"].p == pytest.approx(_hand_t_test_p(abs_good, abs_bad))
  assert tests["rmse"].p == pytest.approx(_hand_t_test_p(abs_good, abs_bad))  # 0/1 errors
  assert tests["mae"].better and tests["rmse"].better  # lower error is better
  reverse = significance.compare("LaMP_3", golds, bad, good)
  assert reverse["mae"].p == pytest.approx(tests["mae"].p) and not reverse["mae"].better


def test_identical_predictions_are_never_better():
  golds = {"a": "[1]", "b": "[2]", "c": "[1]"}
  preds = {"a": "[1]", "b": "[1]", "c": "[1]"}
  tests = significance.compare("LaMP_1", golds, preds, dict(preds))
  assert {m: (t.p, t.better) for m, t in tests.items()} == {
      "accuracy": (1.0, False), "f1": (1.0, False)}


def test_generation_t_test_reads_per_query_rouge():
  golds = {"a": "the cat sat", "b": "a dog ran far", "c": "big news today", "d": "x y z"}
  mine = {"a": "the cat sat", "b": "a dog ran", "c": "big news", "d": "x y"}
  theirs = {"a": "cat", "b": "dog", "c": "news", "d": "q"}
  tests = significance.compare("LaMP_4", golds, mine, theirs)
  r_mine = metrics.query_scores("LaMP_4", golds, mine)
  r_theirs = metrics.query_scores("LaMP_4", golds, theirs)
  for m in ("rouge-1", "rouge-L"):
    assert tests[m].p == pytest.approx(_hand_t_test_p(r_mine[m], r_theirs[m]))
    assert tests[m].better == (tests[m].p < 0.05)


def test_f1_randomization_matches_the_exact_permutation_test():
  rng = np.random.default_rng(1)
  labels = ("[1]", "[2]")
  n = 12
  gold = rng.integers(0, 2, n)
  mine = np.where(rng.random(n) < 0.85, gold, 1 - gold)
  theirs = np.where(rng.random(n) < 0.45, gold, 1 - gold)
  as_map = lambda y: {f"q{i}": labels[v] for i, v in enumerate(y)}
  test = significance.compare("LaMP_1", as_map(gold), as_map(mine), as_map(theirs))["f1"]
  # Exact: every one of the 2^n swap patterns, the share at least as extreme as observed.
  observed = metrics.f1_macro(gold, mine, 2) - metrics.f1_macro(gold, theirs, 2)
  extreme = 0
  for swap in itertools.product([False, True], repeat=n):
    s = np.array(swap)
    a, b = np.where(s, theirs, mine), np.where(s, mine, theirs)
    extreme += abs(metrics.f1_macro(gold, a, 2) - metrics.f1_macro(gold, b, 2)) >= abs(observed) - 1e-12
  exact = extreme / 2 ** n
  assert test.method == "paired randomization"
  assert test.p == pytest.approx(exact, abs=0.015)  # 10,000 rounds: sd of p <= 0.005
  again = significance.compare("LaMP_1", as_map(gold), as_map(mine), as_map(theirs))["f1"]
  assert again.p == test.p  # seeded


def test_grid_picks_the_best_rag_by_the_first_metric():
  golds = {f"q{i}": "3" for i in range(6)}
  preds = {"non_personalized": {f"q{i}": "5" for i in range(6)},
           "rag_k1": {f"q{i}": "4" for i in range(6)},
           "rag_k2": {f"q{i}": "3" if i < 3 else "4" for i in range(6)},
           "oppu_k0": {f"q{i}": "3" for i in range(6)}}
  results = {s: metrics.evaluate("LaMP_3", golds, p) for s, p in preds.items()}
  grid = significance.grid_tests("LaMP_3", golds, preds, results)
  assert grid.baseline == "non_personalized" and grid.best_rag == "rag_k2"
  assert set(grid.vs_baseline) == {"rag_k1", "rag_k2", "oppu_k0"}
  assert set(grid.vs_best_rag) == {"non_personalized", "rag_k1", "oppu_k0"}
  # The same error of 2 removed on every query: zero variance, t infinite, p 0.
  assert grid.vs_baseline["oppu_k0"]["mae"].p == 0.0 and grid.vs_baseline["oppu_k0"]["mae"].better
  # Against rag_k2, oppu removes an error of 1 on 3 of 6 queries.
  mae = grid.vs_best_rag["oppu_k0"]["mae"]
  assert mae.p == pytest.approx(_hand_t_test_p([0] * 6, [0, 0, 0, 1, 1, 1]))
  assert mae.better == (mae.p < 0.05)
  assert grid.to_json()["vs_best_rag"]["oppu_k0"]["mae"]["p"] == mae.p
