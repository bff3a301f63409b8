"""Which users train together, in which order: the groups of the multi-user trainer.

Every user has its own batch shape (T, K), buckets of its own data (user_batches.plan_user).
Groups run one after another, the largest shape first; inside a group, users enter the slots
longest first (most steps, then most tokens), so a group does not end with one long user alone.

Policies, for a bucket with fewer users than slots:
- "refill": the group borrows users of smaller shapes (the nearest shapes first) for its free
  slots; their rows are padded up to the group's (T, K), the same rows, positions and masks, so
  such a user's adapter changes by float rounding only, and depends on which bucket it joined.
- "exact": every bucket is its own group (its own compilation), however few users it has.
Pure Python: no JAX here.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from oppu_jax.errors import ConfigError
from oppu_jax.train.user_batches import UserPlan

POLICIES = ("refill", "exact")


@dataclasses.dataclass(frozen=True)
class Group:
  """Users that share one compiled step: `plans` in the order they enter the `slots`."""

  shape: tuple[int, ...]  # (T, K), or (T, K, S) with encoder inputs, of every batch of the group
  plans: tuple[UserPlan, ...]
  slots: int


def schedule(plans: Sequence[UserPlan], slots: int, policy: str = "refill",
             multiple_of: int = 1) -> list[Group]:
  """Groups of users, in training order. A group has min(slots, its users) slots, rounded up to
  `multiple_of` (the devices the users axis is split over)."""
  if policy not in POLICIES:
    raise ConfigError(f"train.schedule: {policy!r}; choose one of {', '.join(POLICIES)}")
  buckets: dict[tuple[int, int], list[UserPlan]] = {}
  for plan in plans:
    buckets.setdefault(plan.shape_key, []).append(plan)
  pending = [buckets[shape] for shape in sorted(buckets, reverse=True)]  # largest shape first
  groups = []
  while pending:
    members = pending.pop(0)
    while policy == "refill" and len(members) < slots and pending:
      smaller = sorted(pending[0], key=_length, reverse=True)
      take = slots - len(members)
      members, pending[0] = members + smaller[:take], smaller[take:]
      if not pending[0]:
        pending.pop(0)
    members = sorted(members, key=_length, reverse=True)
    shape = tuple(max(dims) for dims in zip(*(p.shape_key for p in members)))
    used = -(-min(slots, len(members)) // multiple_of) * multiple_of
    groups.append(Group(shape, tuple(members), used))
  return groups


def _length(plan: UserPlan) -> tuple[int, int]:
  """Longest first: most steps, then most tokens."""
  return plan.total_steps, plan.epochs * sum(len(e.tokens) for e in plan.examples)
