import random

import numpy as np
import pytest
import rank_bm25

from oppu_jax.data import retrieval
from oppu_jax.data.types import DataError

WORDS = "great poor camera battery screen price sound fast slow love hate box ship".split()


def _text(rng, n_words):
  return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _history(rng, n, with_dates=True):
  """Time-ordered items; dates repeat (several items per day) to exercise equal dates."""
  items, day = [], 1
  for i in range(n):
    day += rng.choice([0, 0, 1, 2])
    item = {"id": str(i), "text": _text(rng, rng.randint(1, 12)), "score": str(rng.randint(1, 5))}
    if with_dates:
      item["date"] = f"2020-{1 + day // 28:02d}-{1 + day % 28:02d}"
    items.append(item)
  return items


def test_bm25_matches_get_top_n_without_ties():
  rng = random.Random(0)
  checked = 0
  for _ in range(200):
    corpus = [_text(rng, rng.randint(2, 15)) for _ in range(rng.randint(2, 12))]
    query = _text(rng, rng.randint(1, 5))
    scores = rank_bm25.BM25Okapi([c.split() for c in corpus]).get_scores(query.split())
    if len(set(scores.tolist())) < len(scores):
      continue  # ties: get_top_n's order is argsort's, ours is by index
    k = rng.randint(1, len(corpus))
    ref = rank_bm25.BM25Okapi([c.split() for c in corpus]).get_top_n(
        query.split(), list(range(len(corpus))), n=k)
    assert retrieval.bm25_top_k(query, corpus, k) == ref
    checked += 1
  assert checked > 50


def test_ties_break_by_index():
  corpus = ["a b", "c d", "a b", "e f", "a b"]
  assert retrieval.bm25_top_k("a", corpus, 5) == [0, 2, 4, 1, 3]
  assert retrieval.bm25_top_k("zzz", corpus, 3) == [0, 1, 2]
  assert retrieval.top_k_indices(np.array([1.0, 3.0, 3.0, 2.0]), 3) == [1, 2, 3]


def test_degenerate_corpora():
  assert retrieval.bm25_top_k("a", [], 3) == []
  assert retrieval.bm25_top_k("a", ["", "  "], 3) == [0, 1]
  assert retrieval.bm25_top_k("a", ["a"], 0) == []


def test_tokenization_is_reference_split():
  # Case is kept (as LaMP's `.split()`); lower_split folds it.
  corpus = ["Camera good", "camera bad", "other words"]
  assert retrieval.bm25_top_k("Camera", corpus, 1) == [0]
  assert retrieval.bm25_top_k("camera", corpus, 1) == [1]
  assert set(retrieval.bm25_top_k("CAMERA", corpus, 2, tokenize=retrieval.lower_split)) == {0, 1}


@pytest.mark.parametrize("method", retrieval.METHODS)
@pytest.mark.parametrize("with_dates", [True, False])
def test_training_items_never_see_their_time_or_later(method, with_dates):
  from oppu_jax.data import rspg

  rng = random.Random(1)
  # Any scorer and any choice: leakage is the ranking's frame, not the scores'.
  overlap = lambda q, texts: np.array([len(set(q.split()) & set(t.split())) for t in texts], float)
  weights = np.zeros((2, len(rspg.FEATURES)))
  weights[1, 1] = 1.0  # long histories -> dense, short -> bm25 (by the log_history feature)
  selector = rspg.Selector(("bm25", "dense"), weights)
  for trial in range(30):
    history = _history(rng, rng.randint(1, 25), with_dates)
    for t in range(len(history)):
      got = retrieval.retrieve_for_history_item(
          history, t, rng.randint(0, 6), doc_text="text", method=method,
          user_id=f"u{trial}", dense=overlap, rspg=selector)
      assert len(set(got)) == len(got)
      for j in got:
        assert j < t
        if with_dates:
          assert history[j]["date"] < history[t]["date"]  # ISO strings order as dates


def test_equal_dates_are_not_before():
  history = [{"id": "0", "text": "a", "date": "2020-01-01"},
             {"id": "1", "text": "a", "date": "2020-01-02"},
             {"id": "2", "text": "a", "date": "2020-01-02"},
             {"id": "3", "text": "a", "date": "2020-01-03"}]
  assert retrieval.visible_before_item(history, 2) == [0]
  assert retrieval.visible_before_item(history, 3) == [0, 1, 2]
  assert retrieval.visible_before_item(history, 0) == []
  # Undated: index order alone.
  undated = [{"id": str(i), "text": "a"} for i in range(3)]
  assert retrieval.visible_before_item(undated, 2) == [0, 1]


def test_query_visibility_by_date():
  history = _history(random.Random(2), 20)
  assert retrieval.visible_before_date(history, None) == list(range(20))
  cut = history[10]["date"]
  visible = retrieval.visible_before_date(history, cut)
  assert visible == [j for j in range(20) if history[j]["date"] < cut]
  got = retrieval.retrieve_for_query(history, "camera", 20, doc_text="text", query_date=cut)
  assert sorted(got) == visible


def test_compact_and_dashed_dates_compare_as_dates():
  # LaMP spells dates both ways ("20111201", "2011-12-01"); a query may use the other spelling.
  history = [{"id": "0", "text": "a", "date": "20111201"},
             {"id": "1", "text": "a", "date": "20111203"}]
  assert retrieval.visible_before_date(history, "2011-12-02") == [0]
  assert retrieval.visible_before_item(history + [{"id": "2", "date": "2011-12-02"}], 2) == [0]


def test_query_text_defaults_and_separate_renderer():
  # (BM25Okapi's idf is 0 for a term in half of the documents: use a few more.)
  texts = ["battery", "screen", "sound", "price", "box", "screen"]
  history = [{"id": str(i), "text": t, "score": str(1 + i % 5)} for i, t in enumerate(texts)]
  assert retrieval.retrieve_for_history_item(history, 5, 1, doc_text="text") == [1]
  # A callable renderer: the query omits the answer field.
  doc = lambda it: f"{it['text']} score: {it['score']}"
  assert retrieval.retrieve_for_history_item(
      history, 5, 1, doc_text=doc, query_text="text") == [1]
  with pytest.raises(DataError, match="no field 'title'"):
    retrieval.retrieve_for_history_item(history, 5, 1, doc_text="title")
  with pytest.raises(ValueError, match="unknown retrieval method"):
    retrieval.retrieve_for_history_item(history, 5, 1, doc_text="text", method="contriever")


def test_recency():
  history = [{"id": str(i), "date": d} for i, d in
             enumerate(["2020-01-01", "2020-01-05", "2020-01-03", "2020-01-07"])]
  # Dates decide (the history here is deliberately not sorted), newest first.
  assert retrieval.recency_top_k(history, [0, 1, 2, 3], 3) == [3, 1, 2]
  undated = [{"id": str(i)} for i in range(4)]
  assert retrieval.recency_top_k(undated, [0, 1, 2], 2) == [2, 1]
  assert retrieval.retrieve_for_query(undated, "", 2, doc_text="id", method="recency") == [3, 2]


def test_random_is_deterministic_per_user_and_salt():
  a = retrieval.random_k(50, 5, seed=0, user_id="alice")
  assert a == retrieval.random_k(50, 5, seed=0, user_id="alice")
  assert a != retrieval.random_k(50, 5, seed=0, user_id="bob")
  assert a != retrieval.random_k(50, 5, seed=1, user_id="alice")
  assert a != retrieval.random_k(50, 5, seed=0, user_id="alice", salt="q1")
  assert len(set(a)) == 5 and all(0 <= i < 50 for i in a)
  assert sorted(retrieval.random_k(3, 10, seed=0, user_id="a")) == [0, 1, 2]
  assert retrieval.random_k(0, 3, seed=0, user_id="a") == []
  # Pinned values: catch a switch to Python's salted hash() or to another RNG.
  assert retrieval.stable_seed(0, "alice", "") == 0xA7D9E27085E9152A
  assert a == [3, 23, 9, 39, 4]


# -- dense (real all-MiniLM-L6-v2) and RSPG ---------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
  pytest.importorskip("torch")  # not needed, but the encoder's deps come with the test extra
  from oppu_jax.models import bert

  return bert.DenseEncoder()


MEANING = [
    {"id": "0", "text": "a travel guide about space-saving furniture for small flats",
     "date": "2020-01-01"},
    {"id": "1", "text": "movie on astronauts flying to Mars", "date": "2020-01-02"},
    {"id": "2", "text": "travel deals: cheap flights and more space in economy",
     "date": "2020-01-03"},
    {"id": "3", "text": "a documentary of the Apollo moon landing", "date": "2020-01-04"},
    {"id": "4", "text": "recipes for a quick pasta dinner", "date": "2020-01-05"},
    {"id": "5", "text": "space travel tips for your suitcase", "date": "2020-01-06"},
]


@pytest.mark.real_weights
def test_dense_top_4_differs_from_bm25_where_meaning_not_words_matches(minilm):
  query = "a film about space travel"
  bm25 = retrieval.retrieve_for_query(MEANING, query, 4, doc_text="text", method="bm25")
  dense = retrieval.retrieve_for_query(MEANING, query, 4, doc_text="text", method="dense",
                                       dense=minilm.scores)
  assert dense != bm25
  assert dense[0] == 1  # the paraphrase (movie / astronauts / Mars) shares no word with the query
  assert 1 not in bm25[:1] and 4 not in dense


@pytest.mark.real_weights
def test_dense_respects_time_and_needs_a_scorer(minilm):
  got = retrieval.retrieve_for_query(MEANING, "a film about space travel", 4, doc_text="text",
                                     method="dense", dense=minilm.scores, query_date="2020-01-03")
  assert set(got) <= {0, 1}
  got = retrieval.retrieve_for_history_item(MEANING, 4, 2, doc_text="text", method="dense",
                                            dense=minilm.scores)
  assert set(got) <= {0, 1, 2, 3}
  with pytest.raises(ValueError, match="needs a dense scorer"):
    retrieval.retrieve_for_query(MEANING, "x", 2, doc_text="text", method="dense")
