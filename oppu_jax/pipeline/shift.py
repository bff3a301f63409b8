"""Behaviour shift (OPPU §5, Table 2): each test user's history cut to the items least similar
to its queries, for the settings whose `history` is "shift"; the cut is made once per run."""

from __future__ import annotations

import dataclasses
import logging

from oppu_jax.data.types import User
from oppu_jax.pipeline import examples
from oppu_jax.pipeline.experiment import Experiment
from oppu_jax.pipeline.retrievers import retrievers_for
from oppu_jax.pipeline.settings import Setting

_USERS = "shift.users"  # Experiment.memo key: the cut users


def users_of(exp: Experiment, setting: Setting) -> tuple[User, ...]:
  """The test users as `setting` sees them: under behaviour shift, each history cut to the items
  least similar to the user's queries (dense cosine; the same cut for training and retrieval)."""
  if setting.history != "shift":
    return exp.test_users
  if _USERS not in exp.memo:
    keep = exp.config.analysis.shift_keep
    exp.memo[_USERS] = examples.least_similar_histories(
        exp.task, exp.test_users, keep, retrievers_for(exp, dataclasses.replace(
            setting, retrieval="dense")).dense)
    kept = [len(u.history) for u in exp.memo[_USERS]]
    logging.info("behaviour shift: each test user keeps the %.0f %% of its history least "
                 "similar to its queries (%d of %d items)", 100 * keep, sum(kept),
                 sum(len(u.history) for u in exp.test_users))
  return exp.memo[_USERS]


def shift_suffix(keep: float) -> str:
  """The name of a behaviour-shift variant: "shift50" keeps 50 % of each history."""
  return f"shift{round(100 * keep)}"
