"""Preemption checkpoints of a long training run (task adaptation): the trainer's whole state
every N steps through orbax's CheckpointManager, so a rerun continues from the latest one.

Saved: every leaf of the slots (adapter, optimizer state, step counter, PRNG key, learning-rate
table) and the losses so far. Everything else the next step needs is a function of the step
index (the batch: `UserBatches(plan, seed)(step)`; the dropout key: fold_in(key, step)), so a
resumed run computes the same steps as an uninterrupted one and ends with the same adapter.
The slots are saved as their flat leaves and put back into the live slots' structure: the
checkpoint holds arrays only, nothing of the trainer's classes.

Multi-process: every process calls save and restore (orbax writes each array once, from the
process that owns it, and finishes with a barrier).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class StageCheckpoints:
  """Checkpoints of one training run in `directory` (the latest kept), every `every` steps."""

  def __init__(self, directory: str, every: int, on_saved=None):
    """on_saved(path of the step's checkpoint), called by process 0 after each save."""
    self.directory, self.every, self.on_saved = directory, every, on_saved
    self._manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, save_interval_steps=every, enable_async_checkpointing=False,
        create=True))

  def restore(self, slots):
    """(slots, losses) of the latest checkpoint, shaped and placed like `slots`; None if none."""
    step = self._manager.latest_step()
    if step is None:
      return None
    leaves, treedef = jax.tree.flatten(slots)
    target = {"slots": {str(i): _abstract(x) for i, x in enumerate(leaves)},
              "losses": jax.ShapeDtypeStruct((step,), np.float32)}
    state = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    logging.info("resumed from the checkpoint at step %d (%s)", step, self.directory)
    restored = jax.tree.unflatten(treedef, [state["slots"][str(i)] for i in range(len(leaves))])
    return restored, [float(x) for x in np.asarray(state["losses"])]

  def maybe_save(self, step: int, slots, losses: list[float]) -> None:
    """Saves after `step` steps when it is a multiple of `every`."""
    if self.every <= 0 or step % self.every:
      return
    leaves = jax.tree.leaves(slots)
    self._manager.save(step, args=ocp.args.StandardSave({
        "slots": {str(i): x for i, x in enumerate(leaves)},
        "losses": np.asarray(losses, np.float32)}))
    self._manager.wait_until_finished()
    if self.on_saved is not None and jax.process_index() == 0:
      self.on_saved(os.path.join(self.directory, str(step)))

  def close(self) -> None:
    self._manager.close()


def _abstract(x) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
