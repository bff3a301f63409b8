"""The scheduler: longest users first, largest shapes first, no group leaving most slots idle."""

import numpy as np
import pytest

from oppu_jax.data.batching import Example
from oppu_jax.errors import ConfigError
from oppu_jax.train import scheduler
from oppu_jax.train import user_batches as ub


def _plan(uid: str, seq_len: int, examples: int, num_targets: int = 4):
  tokens = np.arange(seq_len - 2, dtype=np.int32) % 50 + 3
  mask = np.zeros(len(tokens), bool)
  mask[-num_targets:] = True
  return ub.plan_user(uid, [Example(tokens, mask)] * examples, batch_size=4, epochs=2,
                      seq_buckets=(64, 80, 96), target_buckets=(4, 8))


def _ids(group):
  return [p.user_id for p in group.plans]


def test_default_run_shapes_refill_one_group_of_eight_at_the_largest_shape():
  plans = [_plan(f"u{i}", 80, 8 + i) for i in range(7)] + [_plan("long96", 96, 9)]
  groups = scheduler.schedule(plans, 8, "refill")
  assert len(groups) == 1
  assert groups[0].shape == (96, 4) and groups[0].slots == 8
  # Longest first: most steps (u6, u5: 4 batches x 2 epochs), then most tokens among equals
  # (3 batches: u4 12 x 78 tokens, u3 11 x 78, long96 9 x 94, u2 10 x 78, u1 9 x 78).
  assert _ids(groups[0]) == ["u6", "u5", "u4", "u3", "long96", "u2", "u1", "u0"]


def test_exact_keeps_buckets_apart_largest_shape_first():
  plans = [_plan(f"u{i}", 80, 8 + i) for i in range(7)] + [_plan("long96", 96, 9)]
  groups = scheduler.schedule(plans, 8, "exact")
  assert [(g.shape, g.slots, len(g.plans)) for g in groups] == [((96, 4), 1, 1), ((80, 4), 7, 7)]
  assert _ids(groups[1])[0] == "u6"


def test_refill_borrows_only_for_free_slots_nearest_shape_first():
  plans = ([_plan("big", 96, 4)] + [_plan(f"m{i}", 80, 4 + i) for i in range(2)]
           + [_plan(f"s{i}", 64, 4 + i) for i in range(5)])
  groups = scheduler.schedule(plans, 4, "refill")
  assert [g.shape for g in groups] == [(96, 4), (64, 4)]
  assert sorted(_ids(groups[0])) == ["big", "m0", "m1", "s4"]  # s4: the longest of the 64s
  assert _ids(groups[1]) == ["s3", "s2", "s1", "s0"]
  assert sum(len(g.plans) for g in groups) == len(plans)


def test_group_shape_covers_every_member_and_slots_round_up_to_devices():
  plans = [_plan("wide", 80, 4, num_targets=8), _plan("long", 96, 4)]
  (group,) = scheduler.schedule(plans, 8, "refill", multiple_of=4)
  assert group.shape == (96, 8) and group.slots == 4


def test_unknown_policy_is_a_config_error():
  with pytest.raises(ConfigError, match="train.schedule"):
    scheduler.schedule([_plan("a", 64, 4)], 2, "fifo")
