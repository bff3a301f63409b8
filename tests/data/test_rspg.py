"""RSPG: the per-query retriever choice, fitted on a training split by ridge regression on the
proxy utilities; deterministic, saved and read back."""

import numpy as np
import pytest

from oppu_jax.data import retrieval, rspg
from oppu_jax.data import prompts as prompts_lib
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.errors import DataError


def _history(n, topical):
  """Dated reviews; `topical`: the query's words appear in the OLDEST items (BM25 finds them,
  recency does not), else the newest items carry the answer and no query word."""
  items = []
  for i in range(n):
    match = (i < 3) if topical else False
    text = "battery lasts long charger" if match else f"filler words number {i}"
    score = "5" if (match or (not topical and i >= n - 4)) else "1"
    items.append({"id": str(i), "text": text, "score": score, "date": f"2020-01-{i + 1:02d}"})
  return items


def _rows(task, n_queries):
  rows = []
  for q in range(n_queries):
    topical = q % 2 == 0
    history = _history(8 + q % 5, topical)
    query = "battery charger" if topical else "completely unrelated question words"
    texts = [prompts_lib.corpus_text(task, item) for item in history]
    utilities = {}
    for method in ("bm25", "recency"):
      idx = retrieval.retrieve_for_query(history, query, 4, doc_text="text", method=method)
      utilities[method] = rspg.utility(task, "", "5", [history[j] for j in idx])
    rows.append((rspg.features(query, texts, [i["date"] for i in history]), utilities, history,
                 query))
  return rows


def test_the_fitted_rule_picks_the_retriever_that_fits_each_kind_of_query(tmp_path):
  task = tasks_lib.get_task("LaMP_3")
  train = _rows(task, 40)
  selector = rspg.fit([(x, u) for x, u, *_ in train], ("bm25", "recency"))
  for x, utilities, history, query in _rows(task, 10):
    best = max(utilities, key=utilities.get)
    texts = [prompts_lib.corpus_text(task, item) for item in history]
    assert selector.choose(query, texts, [i["date"] for i in history]) == best
    # Through the retriever: "rspg" returns the chosen retriever's own ranking.
    got = retrieval.retrieve_for_query(history, query, 4, doc_text="text", method="rspg",
                                       rspg=selector)
    assert got == retrieval.retrieve_for_query(history, query, 4, doc_text="text", method=best)
  selector.save(str(tmp_path / "rspg.json"))
  again = rspg.Selector.load(str(tmp_path / "rspg.json"))
  assert again.candidates == selector.candidates
  np.testing.assert_array_equal(again.weights, selector.weights)
  refit = rspg.fit([(x, u) for x, u, *_ in train], ("bm25", "recency"))
  np.testing.assert_array_equal(refit.weights, selector.weights)


def test_utilities_follow_the_task():
  lamp3, lamp2m = tasks_lib.get_task("LaMP_3"), tasks_lib.get_task("LaMP_2M")
  assert rspg.utility(lamp3, "", "4", [{"score": "5"}, {"score": "3"}]) == 0.0
  assert rspg.utility(lamp2m, "", "comedy", [{"tag": "comedy"}, {"tag": "action"}]) == 0.5
  lamp5 = tasks_lib.get_task("LaMP_5")
  assert rspg.utility(lamp5, "", "deep nets learn", [{"title": "deep nets", "abstract": "x"},
                                                     {"title": "cats", "abstract": "y"}]) == 0.8


def test_bad_inputs():
  with pytest.raises(DataError, match="no training queries"):
    rspg.fit([], ("bm25",))
  with pytest.raises(DataError, match="features"):
    rspg.Selector.from_json({"candidates": ["bm25"], "features": ["x"], "weights": [[1.0]]})
  with pytest.raises(ValueError, match="fitted selector"):
    retrieval.retrieve_for_query(_history(5, True), "q", 2, doc_text="text", method="rspg")
