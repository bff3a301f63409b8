"""Text pairs for each stage, from one user's data only: task-adaptation pairs from the other
users' queries, a test user's training pairs from its own history (retrieving only from items
before each one), and a test user's query prompts. Pure Python: no JAX."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import numpy as np

from oppu_jax import config as config_lib
from oppu_jax.data import prompts as prompts_lib
from oppu_jax.data import retrieval
from oppu_jax.data.types import User
from oppu_jax.pipeline.settings import BEST, Setting


@dataclasses.dataclass(frozen=True)
class Retrievers:
  """What the study's retrieval methods need besides the history: the dense scorer ("dense",
  and RSPG's features), the fitted RSPG selector, and the retriever the best RAG row used (for
  the PEFT + RAG rows' "best")."""

  dense: Callable | None = None
  rspg: Any = None
  best: str | None = None

  def method(self, setting: Setting) -> str:
    if setting.retrieval != BEST:
      return setting.retrieval
    if self.best is None:
      raise ValueError(f"{setting.name}: the best RAG retriever is not known yet")
    return self.best


def task_adaptation_pairs(task, users, base: str, k: int, profiles: dict[str, str], *,
                          seed: int) -> list[tuple[str, str]]:
  """(prompt, answer) for every query with a gold of the non-test users: the paper's base-LLM
  task adaptation. base "B": the query alone; "R": + k retrieved items; "P": + the profile."""
  pairs = []
  for user in users:
    for q in user.queries:
      if q.gold is None:
        continue
      items = _retrieve_for_query(task, user, q, k if base != "B" else 0, "bm25", seed)
      profile = profiles.get(user.id) if base == "P" else None
      pairs.append((prompts_lib.build_prompt(task, q.input, items, profile), q.gold))
  return pairs


def user_training_pairs(task, user: User, setting: Setting, profile: str | None, *,
                        seed: int, history_mode: str = "oppu") -> list[tuple[str, str]]:
  """One PEFT per user: the user's history items as training pairs. With k > 0, item t's prompt
  carries the top-k of the items strictly before t (never its own time or later)."""
  pairs = []
  for t, item in enumerate(user.history):
    items = []
    if setting.k > 0 and task.aligned and history_mode in ("oppu", "aligned"):
      idx = retrieval.retrieve_for_history_item(
          user.history, t, setting.k, doc_text=functools.partial(prompts_lib.corpus_text, task),
          query_text=functools.partial(prompts_lib.item_query_text, task),
          method=setting.retrieval, seed=seed, user_id=user.id)
      items = [user.history[j] for j in idx]
    pairs.append(prompts_lib.history_to_pairs(
        task, item, history_mode, retrieved_items=items,
        profile=profile if setting.profile else None, seed=seed))
  return pairs


def random_history_corpus(users: Sequence[User], mode: str) -> tuple[dict, ...] | None:
  """The pool of retrieval "random" (Table 1's random_history): mode "corpus", every user's
  history items in data order (OPPU App. D: "random history behavior from all user history
  corpus"); mode "own", None (each user's own history)."""
  config_lib.check_choice("data.random_history", mode)
  if mode == "own":
    return None
  return tuple(item for user in users for item in user.history)


def query_prompts(task, user: User, setting: Setting, profile: str | None, *,
                  seed: int, retrievers: Retrievers | None = None,
                  corpus: Sequence[dict] | None = None) -> list[tuple[str, str]]:
  """(query id, prompt) for each of the user's queries under `setting`. `corpus`
  (`random_history_corpus`): where retrieval "random" draws from; None: the user's history."""
  retrievers = retrievers or Retrievers()
  out = []
  for q in user.queries:
    method = retrievers.method(setting)
    if method == "random" and corpus is not None:
      items = _random_from_corpus(corpus, q, setting.k, seed)
    else:
      items = _retrieve_for_query(task, user, q, setting.k, method, seed, retrievers)
    if setting.prompts == "study":
      out.append((q.id, prompts_lib.build_study_prompt(task, q.input, items)))
    else:
      out.append((q.id, prompts_lib.build_prompt(task, q.input, items,
                                               profile if setting.profile else None)))
  return out


def _retrieve_for_query(task, user: User, q, k: int, method: str, seed: int,
                        retrievers: Retrievers | None = None):
  if k <= 0 or not user.history:
    return []
  retrievers = retrievers or Retrievers()
  idx = retrieval.retrieve_for_query(
      user.history, prompts_lib.retrieval_query(task, q.input), k,
      doc_text=functools.partial(prompts_lib.corpus_text, task), query_date=q.date,
      method=method, seed=seed, user_id=user.id, salt=q.id, dense=retrievers.dense,
      rspg=retrievers.rspg)
  return [user.history[j] for j in idx]


def _random_from_corpus(corpus: Sequence[dict], q, k: int, seed: int) -> list[dict]:
  # Seeded by the query id alone, so a query's items do not depend on which users a process
  # predicts or in what order; only items dated before the query, as a user's own would be.
  if k <= 0:
    return []
  idx = retrieval.random_from_corpus(corpus, k, query_date=q.date, seed=seed, salt=q.id)
  return [corpus[j] for j in idx]


def least_similar_histories(task, users, keep: float, scores: Callable) -> tuple[User, ...]:
  """OPPU §5's behaviour shift: each user's history cut to the `keep` share of its items (at
  least one) least similar to the user's queries — an item's similarity is its highest cosine
  to any of the user's queries under `scores(query, texts)` (the dense encoder); time order kept.
  A user with several queries gets one cut for all of them, so one adapter serves them all."""
  out = []
  for user in users:
    if not user.history or not user.queries:
      out.append(user)
      continue
    texts = [prompts_lib.corpus_text(task, item) for item in user.history]
    similarity = np.max([scores(prompts_lib.retrieval_query(task, q.input), texts)
                         for q in user.queries], axis=0)
    n = max(1, int(round(keep * len(texts))))
    kept = sorted(np.argsort(similarity, kind="stable")[:n])
    out.append(dataclasses.replace(user, history=tuple(user.history[i] for i in kept)))
  return tuple(out)


def rspg_training_rows(task, users, candidates, *, k: int, seed: int,
                       retrievers: Retrievers) -> list:
  """(features, {candidate: utility}) for every query with a gold of `users` (the non-test
  users): RSPG's training split (data/rspg.py)."""
  from oppu_jax.data import rspg

  rows = []
  doc_text = functools.partial(prompts_lib.corpus_text, task)
  for user in users:
    for q in user.queries:
      if q.gold is None or not user.history:
        continue
      query = prompts_lib.retrieval_query(task, q.input)
      visible = retrieval.visible_before_date(user.history, q.date)
      x = rspg.features(query, [doc_text(user.history[j]) for j in visible],
                        [user.history[j].get("date") for j in visible], retrievers.dense)
      utilities = {m: rspg.utility(task, q.input, q.gold, _retrieve_for_query(
          task, user, q, k, m, seed, retrievers)) for m in candidates}
      rows.append((x, utilities))
  return rows
