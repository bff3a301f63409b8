"""The trainer's slot state: learning-rate tables equal the host schedule; counters per slot."""

import jax.numpy as jnp
import numpy as np

from oppu_jax.train import optim
from oppu_jax.train.slots import Slots, learning_rates


def test_learning_rate_table_is_the_host_schedule_cast_to_f32():
  row = learning_rates(23, 0.1, 1e-3, width=30)
  want = [np.float32(optim.linear_schedule(s, 23, 0.1, 1e-3)) for s in range(23)]
  assert row.dtype == np.float32
  np.testing.assert_array_equal(row[:23], want)
  assert row[0] == 0 and not row[23:].any()


def test_entering_and_stepping_move_only_the_active_slots_counters():
  adapter, opt_state = {"w": jnp.ones((2, 3))}, {"mu": jnp.zeros(3)}
  slots = Slots.empty("lora", adapter, opt_state, num_slots=3, max_steps=4)
  assert slots.adapters.num_users == 3 and slots.lr.shape == (3, 4)
  slots = slots.enter(1, {"w": jnp.full((2, 3), 5.0)}, {"mu": jnp.ones(3)},
                      jnp.array([7, 8], jnp.uint32), 2, jnp.arange(4, dtype=jnp.float32))
  np.testing.assert_array_equal(slots.adapters.user(1)["w"], np.full((2, 3), 5.0))
  np.testing.assert_array_equal(slots.key[1], [7, 8])
  for _ in range(3):
    slots = slots.stepped(slots.adapters.tree, slots.opt_states)
  # Slot 1 stops at its total (2); the idle slots (total 0) never move.
  np.testing.assert_array_equal(slots.step, [0, 2, 0])
