"""Text pairs for each stage, from one user's data only: task-adaptation pairs from the other
users' queries, a test user's training pairs from its own history (retrieving only from items
before each one), and a test user's query prompts. Pure Python: no JAX."""

from __future__ import annotations

import functools

from oppu_jax.data import retrieval
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.types import User
from oppu_jax.pipeline.settings import Setting


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
      pairs.append((tasks_lib.build_prompt(task, q.input, items, profile), q.gold))
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
          user.history, t, setting.k, doc_text=functools.partial(tasks_lib.corpus_text, task),
          query_text=functools.partial(tasks_lib.item_query_text, task),
          method=setting.retrieval, seed=seed, user_id=user.id)
      items = [user.history[j] for j in idx]
    pairs.append(tasks_lib.history_to_pairs(
        task, item, history_mode, retrieved_items=items,
        profile=profile if setting.profile else None))
  return pairs


def query_prompts(task, user: User, setting: Setting, profile: str | None, *,
                  seed: int) -> list[tuple[str, str]]:
  """(query id, prompt) for each of the user's queries under `setting`."""
  out = []
  for q in user.queries:
    items = _retrieve_for_query(task, user, q, setting.k, setting.retrieval, seed)
    out.append((q.id, tasks_lib.build_prompt(task, q.input, items,
                                             profile if setting.profile else None)))
  return out


def _retrieve_for_query(task, user: User, q, k: int, method: str, seed: int):
  if k <= 0 or not user.history:
    return []
  idx = retrieval.retrieve_for_query(
      user.history, tasks_lib.retrieval_query(task, q.input), k,
      doc_text=functools.partial(tasks_lib.corpus_text, task), query_date=q.date,
      method=method, seed=seed, user_id=user.id, salt=q.id)
  return [user.history[j] for j in idx]
