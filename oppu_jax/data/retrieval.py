"""Per-user retrieval over a time-ordered history: BM25, recency, random, dense, and RSPG.

Every function returns indices into the user's own history (never items), so the caller keeps
control of formatting and no other user's data can enter; the one exception,
`random_from_corpus`, draws from a corpus of every user's items, for OPPU's "random history"
baseline, which the paper draws "from all user history corpus".

Conventions:
- Tokenization for BM25 is `text.split()` (whitespace, case kept), as LaMP's reference
  (`rank_profiles.py`) does; OPPU's `OPPU.py` uses `split(" ")`, which differs only by the
  empty tokens that runs of spaces produce. Pass `tokenize=lower_split` for case-folding.
- Ranking ties break by index ascending (the older history item first), so rankings are
  deterministic; `BM25Okapi.get_top_n` leaves tie order to `np.argsort`.
- Time: item j is visible to history item t iff j < t and, where both carry a date, date_j is
  strictly before date_t (equal dates are not "before"). A query sees every item, or, when the
  query has a date, the items whose date is strictly before it (undated items stay visible).
- Randomness derives from `stable_seed(seed, user_id, salt)` (SHA-256), never Python's `hash()`,
  so runs and processes agree.
- "dense" ranks by an injected scorer `dense(query, texts) -> scores` (cosine similarity from a
  sentence encoder: `models/bert.py: DenseEncoder.scores`), so this module stays free of JAX;
  "rspg" asks an injected selector (`data/rspg.py: Selector`) which retriever to use per query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import hashlib
from typing import Any

import numpy as np
import rank_bm25

from oppu_jax.data.types import date_key
from oppu_jax.errors import DataError

Item = Mapping[str, Any]
# A history item's text: a field name, or a function of the item (e.g. title + " " + text).
TextSpec = str | Callable[[Item], str]
METHODS = ("bm25", "recency", "random", "dense", "rspg")
# dense(query, candidate texts) -> similarity scores, higher = closer.
DenseScorer = Callable[[str, Sequence[str]], np.ndarray]


def bm25_top_k(
    query: str,
    corpus_texts: Sequence[str],
    k: int,
    tokenize: Callable[[str], list[str]] = str.split,
) -> list[int]:
  """Indices of the k best BM25Okapi matches, best first; ties by index ascending."""
  return top_k_indices(bm25_scores(query, corpus_texts, tokenize), k)


def bm25_scores(
    query: str,
    corpus_texts: Sequence[str],
    tokenize: Callable[[str], list[str]] = str.split,
) -> np.ndarray:
  """BM25Okapi (k1=1.5, b=0.75, epsilon=0.25) scores of each text, float64 [len(corpus)]."""
  docs = [tokenize(t) for t in corpus_texts]
  # rank_bm25 divides by the mean document length and the vocabulary size: guard the
  # corpora where both are zero (no texts, or only empty ones) — every score is 0 there.
  if not any(docs):
    return np.zeros(len(docs))
  return np.asarray(rank_bm25.BM25Okapi(docs).get_scores(tokenize(query)), np.float64)


def top_k_indices(scores: np.ndarray, k: int) -> list[int]:
  """Indices of the k highest scores, score descending then index ascending."""
  scores = np.asarray(scores, np.float64)
  order = np.lexsort((np.arange(len(scores)), -scores))
  return order[: max(k, 0)].tolist()


def lower_split(text: str) -> list[str]:
  """Case-folded whitespace tokenization, an alternative to the reference's `str.split`."""
  return text.lower().split()


def retrieve_for_history_item(
    history: Sequence[Item],
    t_index: int,
    k: int,
    *,
    doc_text: TextSpec,
    query_text: TextSpec | None = None,
    method: str = "bm25",
    tokenize: Callable[[str], list[str]] = str.split,
    seed: int = 0,
    user_id: str = "",
    date_key: str = "date",
    dense: DenseScorer | None = None,
    rspg: Any = None,
) -> list[int]:
  """Top-k history indices for training item `t_index`, from items strictly before it.

  `doc_text` renders a candidate item, `query_text` renders item t as the query (defaults to
  `doc_text`; pass a renderer without the answer field so the label cannot leak into the query).
  """
  visible = visible_before_item(history, t_index, date_key=date_key)
  # Only BM25 reads the query; recency and random must not fail on its fields.
  reads_query = method in ("bm25", "dense", "rspg")
  query = _text_fn(query_text or doc_text)(history[t_index]) if reads_query else ""
  return _rank(method, query, history, visible, k, doc_text, tokenize,
               (seed, user_id, f"item:{t_index}"), date_key, dense, rspg)


def retrieve_for_query(
    history: Sequence[Item],
    query: str,
    k: int,
    *,
    doc_text: TextSpec,
    query_date: Any = None,
    method: str = "bm25",
    tokenize: Callable[[str], list[str]] = str.split,
    seed: int = 0,
    user_id: str = "",
    salt: str = "",
    date_key: str = "date",
    dense: DenseScorer | None = None,
    rspg: Any = None,
) -> list[int]:
  """Top-k history indices for a test query (text already extracted from the input).

  `salt` (e.g. the query id) gives each query its own random draw in the random method.
  `dense`: the scorer for method "dense"; `rspg`: the fitted selector for method "rspg".
  """
  visible = visible_before_date(history, query_date, date_key=date_key)
  return _rank(method, query, history, visible, k, doc_text, tokenize,
               (seed, user_id, f"query:{salt}"), date_key, dense, rspg)


def visible_before_item(
    history: Sequence[Item], t_index: int, *, date_key: str = "date"
) -> list[int]:
  """Indices j < t_index whose date (where both have one) is strictly before item t's."""
  if not 0 <= t_index < len(history):
    raise IndexError(f"history item {t_index} out of range (history has {len(history)})")
  t_date = _parse_date(history[t_index].get(date_key), t_index)
  return [j for j in range(t_index)
          if _strictly_before(_parse_date(history[j].get(date_key), j), t_date)]


def visible_before_date(
    history: Sequence[Item], date: Any, *, date_key: str = "date"
) -> list[int]:
  """All indices, or those dated strictly before `date` when it is given."""
  limit = _parse_date(date, "query")
  return [j for j, item in enumerate(history)
          if _strictly_before(_parse_date(item.get(date_key), j), limit)]


def recency_top_k(
    history: Sequence[Item], visible: Sequence[int], k: int, *, date_key: str = "date"
) -> list[int]:
  """The k most recent of `visible`, newest first: by (date, index) when all have dates."""
  dates = [_parse_date(history[j].get(date_key), j) for j in visible]
  if all(d is not None for d in dates):
    order = sorted(range(len(visible)), key=lambda i: (dates[i], visible[i]), reverse=True)
  else:
    order = sorted(range(len(visible)), key=lambda i: visible[i], reverse=True)
  return [visible[i] for i in order[: max(k, 0)]]


def random_k(n: int, k: int, *, seed: int, user_id: str, salt: str = "") -> list[int]:
  """min(k, n) distinct indices in [0, n), fixed by (seed, user_id, salt)."""
  rng = np.random.default_rng(stable_seed(seed, user_id, salt))
  return rng.choice(n, size=min(max(k, 0), n), replace=False).tolist()


def random_from_corpus(
    corpus: Sequence[Item], k: int, *, query_date: Any = None, seed: int = 0, salt: str = "",
    date_key: str = "date",
) -> list[int]:
  """min(k, visible) distinct indices into `corpus` (every user's history items), drawn at
  random among the items dated strictly before `query_date` (as `visible_before_date`).

  Fixed by (seed, salt) and the corpus alone (salt: the query id), never by the query's user or
  the order queries are asked in. Walks a random permutation and checks dates lazily, so a large
  corpus costs a permutation, not a date parse per item."""
  rng = np.random.default_rng(stable_seed(seed, "corpus", salt))
  limit = _parse_date(query_date, "query")
  out = []
  for j in rng.permutation(len(corpus)).tolist():
    if len(out) >= k:
      break
    if _strictly_before(_parse_date(corpus[j].get(date_key), j), limit):
      out.append(j)
  return out


def stable_seed(*parts: Any) -> int:
  """A 64-bit seed from the parts' string forms; the same in every process and run."""
  digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "little")


def _rank(method, query, history, visible, k, doc_text, tokenize, seed_parts, date_key,
          dense=None, rspg=None):
  if method == "rspg":
    if rspg is None:
      raise ValueError("retrieval method 'rspg' needs a fitted selector (data/rspg.py)")
    texts = [_text_fn(doc_text)(history[j]) for j in visible]
    method = rspg.choose(query, texts, [history[j].get(date_key) for j in visible], dense=dense)
  if method == "bm25":
    text = _text_fn(doc_text)
    top = bm25_top_k(query, [text(history[j]) for j in visible], k, tokenize)
    return [visible[i] for i in top]
  if method == "dense":
    if dense is None:
      raise ValueError("retrieval method 'dense' needs a dense scorer (models/bert.py)")
    text = _text_fn(doc_text)
    scores = dense(query, [text(history[j]) for j in visible]) if visible else np.zeros(0)
    return [visible[i] for i in top_k_indices(scores, k)]
  if method == "recency":
    return recency_top_k(history, visible, k, date_key=date_key)
  if method == "random":
    seed, user_id, salt = seed_parts
    return [visible[i] for i in random_k(len(visible), k, seed=seed, user_id=user_id, salt=salt)]
  raise ValueError(f"unknown retrieval method {method!r}; expected one of {METHODS}")


def _text_fn(spec: TextSpec) -> Callable[[Item], str]:
  if callable(spec):
    return spec

  def field(item: Item) -> str:
    if spec not in item:
      raise DataError(f"history item {item.get('id', '?')!r} has no field {spec!r}")
    return str(item[spec])

  return field


def _parse_date(value: Any, where: Any) -> tuple[int, ...] | None:
  """`types.date_key` ('2011-09-01', '20110901', 2011 -> ints, year first); None if absent."""
  if value is None or value == "":
    return None
  key = date_key(value)
  if key is None:
    raise DataError(f"history item {where}: unparsable date {value!r}")
  return key


def _strictly_before(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> bool:
  # Undated on either side: only the index order (the caller's) applies. Mixed granularity
  # ('2011' vs '2011-09-01') compares the common prefix, so a tie there is not "before".
  if a is None or b is None:
    return True
  n = min(len(a), len(b))
  return a[:n] < b[:n]
