"""The trainer's device state: U slots, each holding one user's adapter, optimizer state, step
counter, PRNG key and learning-rate table, every leaf with a leading [U] axis.

A slot is set when a user enters it; the compiled step then derives the user's dropout key
(fold_in(key, step)) and learning rate (lr[step]) on the device, so the host uploads nothing per
step but the batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.peft.stack import UserAdapters
from oppu_jax.train import optim


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Slots:
  adapters: UserAdapters
  opt_states: Any  # the optimizer state's pytree, leaves [U, ...]
  step: jax.Array  # [U] int32: the occupant's own step
  key: jax.Array  # [U, 2] uint32: the occupant's PRNG key (its init; dropout: fold_in(key, step))
  total: jax.Array  # [U] int32: the occupant's steps; step == total: idle
  lr: jax.Array  # [U, max_steps] f32: the occupant's learning rate at each of its steps

  @classmethod
  def empty(cls, method, adapter, opt_state, num_slots: int, max_steps: int) -> "Slots":
    """`num_slots` idle slots shaped like one user's `adapter` and `opt_state`."""
    stacked = lambda tree: jax.tree.map(lambda x: jnp.zeros((num_slots, *x.shape), x.dtype), tree)
    return cls(UserAdapters.like(method, adapter, num_slots), stacked(opt_state),
               jnp.zeros(num_slots, jnp.int32), jnp.zeros((num_slots, 2), jnp.uint32),
               jnp.zeros(num_slots, jnp.int32), jnp.zeros((num_slots, max_steps), jnp.float32))

  def enter(self, slot, adapter, opt_state, key, total, lr) -> "Slots":
    """A user enters `slot` (jit-friendly): its fresh adapter and optimizer state, step 0."""
    put = lambda stacked, one: stacked.at[slot].set(one)
    return Slots(self.adapters.set_user(slot, adapter), jax.tree.map(put, self.opt_states,
                                                                       opt_state),
                 put(self.step, 0), put(self.key, key), put(self.total, total), put(self.lr, lr))

  def stepped(self, adapters, opt_states) -> "Slots":
    """After a step: the new adapter/optimizer trees; the active slots' counters advance."""
    return dataclasses.replace(
        self, adapters=dataclasses.replace(self.adapters, tree=adapters), opt_states=opt_states,
        step=self.step + (self.step < self.total))


def learning_rates(total_steps: int, warmup_ratio: float, peak_lr: float,
                   width: int) -> np.ndarray:
  """[width] f32: optim.linear_schedule at steps 0..total_steps-1 (float64 cast to f32, as the
  host-side schedule always was), zeros after."""
  row = np.zeros(width, np.float32)
  row[:total_steps] = [optim.linear_schedule(s, total_steps, warmup_ratio, peak_lr)
                       for s in range(total_steps)]
  return row
