"""One user's training examples -> fixed-shape batches, from that user's data and the config only.

A user's sequence length T and target count K are buckets of the user's own longest example, so
under the "exact" schedule (the default on a CPU) the padding a user's rows get never depends on
which other users share the compiled step; under "refill" a user may be padded up to its group's
larger (T, K) (train/scheduler.py).
Batches carry the positions whose outputs predict a target (`target_index`), so the loss computes
logits only there: on a classification task that is a handful of positions per row, not T.

Gradient accumulation (`grad_accum` = A > 1): one optimizer step reads A micro-batches of
`batch_size` rows, stacked on a leading [A] axis; they are consecutive slices of the epoch's
shuffled order, so the step sees exactly the rows one batch of A * batch_size would hold. An
epoch's last step may have fewer real micro-batches; the rest are all padding (zero weight).
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from oppu_jax.data.batching import Example, bucket_length, make_batches
from oppu_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: plans hold arrays
class UserPlan:
  """Everything the trainer needs about one user, fixed before training starts."""

  user_id: str
  examples: tuple[Example, ...]
  seq_len: int  # T, a bucket
  num_targets: int  # K, a bucket
  batch_size: int  # rows per (micro-)batch
  epochs: int
  grad_accum: int = 1  # micro-batches per optimizer step
  source_len: int = 0  # S, a bucket of the encoder inputs (encoder-decoder models); 0: none

  @property
  def steps_per_epoch(self) -> int:
    """Optimizer steps per epoch."""
    return -(-len(self.examples) // (self.batch_size * self.grad_accum))

  @property
  def total_steps(self) -> int:
    return self.steps_per_epoch * self.epochs

  @property
  def shape_key(self) -> tuple[int, ...]:
    """(T, K), or (T, K, S) for an encoder-decoder model's plan."""
    return (self.seq_len, self.num_targets) + ((self.source_len,) if self.source_len else ())


def plan_user(user_id: str, examples, *, batch_size: int, epochs: int,
              seq_buckets: tuple[int, ...], target_buckets: tuple[int, ...],
              grad_accum: int = 1) -> UserPlan:
  if not examples:
    raise DataError(f"user {user_id!r}: no training examples")
  if grad_accum < 1:
    raise ConfigError(f"config.train.grad_accum: {grad_accum}; must be at least 1")
  longest = max(len(e.tokens) for e in examples)
  most_targets = max(int(e.loss_mask[1:].sum()) for e in examples)
  seq_len = bucket_length(longest, seq_buckets)
  sources = [e.source for e in examples if e.source is not None]
  if sources and len(sources) != len(examples):
    raise DataError(f"user {user_id!r}: some training examples have an encoder input, some not")
  source_len = bucket_length(max(len(s) for s in sources), seq_buckets) if sources else 0
  return UserPlan(
      user_id=user_id, examples=tuple(examples), seq_len=seq_len,
      num_targets=min(bucket_length(max(most_targets, 1), target_buckets + (seq_len,)), seq_len),
      batch_size=batch_size, epochs=epochs, grad_accum=grad_accum, source_len=source_len,
  )


def user_seed(seed: int, user_id: str) -> int:
  """A stable per-user seed (Python's hash() is salted per process)."""
  return zlib.crc32(f"{seed}:{user_id}".encode()) & 0x7FFFFFFF


def batch_for_step(plan: UserPlan, step: int, seed: int, pad_id: int = 0,
                   shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
  """The user's batch at its own step `step`; each epoch is shuffled from the user's seed.

  shape: (T, K) at least the plan's own, to pad the same rows up to (more padding columns, more
  zero-weight targets); None: the plan's own shape. Recomputes the epoch: see UserBatches.
  """
  return UserBatches(plan, seed, pad_id, shape)(step)


class UserBatches:
  """One user's batches by step, as batch_for_step gives them, keeping its current epoch."""

  def __init__(self, plan: UserPlan, seed: int, pad_id: int = 0,
               shape: tuple[int, int] | None = None):
    self.plan, self.seed, self.pad_id = plan, seed, pad_id
    self.seq_len, self.num_targets, *source = shape or plan.shape_key
    self.source_len = source[0] if source else 0
    if (self.seq_len < plan.seq_len or self.num_targets < plan.num_targets
        or self.source_len < plan.source_len):
      raise ValueError(f"user {plan.user_id!r}: shape {shape} is smaller than its own "
                       f"{plan.shape_key}")
    self._epoch, self._batches = -1, []

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    """The batch of optimizer step `step`: arrays [B, ...], or [A, B, ...] with grad_accum A > 1."""
    epoch, i = divmod(step, self.plan.steps_per_epoch)
    if epoch != self._epoch:
      # All of the user's examples fit its own T, so one bucket (T,) pads every row to T.
      self._epoch, self._batches = epoch, make_batches(
          self.plan.examples, self.plan.batch_size, (self.seq_len,), self.pad_id,
          shuffle_seed=user_seed(self.seed, f"{self.plan.user_id}/epoch{epoch}"), length="user",
          source_len=self.source_len)
    accum = self.plan.grad_accum
    if accum == 1:
      return with_targets(self._batches[i], self.num_targets)
    micro = [with_targets(b, self.num_targets) for b in self._batches[i * accum:(i + 1) * accum]]
    empty = {k: np.zeros_like(v) for k, v in micro[0].items()}  # zero weight: adds nothing
    micro += [empty] * (accum - len(micro))
    return {k: np.stack([m[k] for m in micro]) for k in micro[0]}


def with_targets(batch: dict[str, np.ndarray], num_targets: int) -> dict[str, np.ndarray]:
  """Adds target_index/target_ids/target_weight [B, K]: the first K target tokens of each row,
  and the position whose output predicts each (target_index = target position - 1)."""
  rows = batch["tokens"].shape[0]
  target_index = np.zeros((rows, num_targets), np.int32)
  target_ids = np.zeros((rows, num_targets), np.int32)
  target_weight = np.zeros((rows, num_targets), np.float32)
  for row in range(rows):
    where = np.flatnonzero(batch["loss_mask"][row, 1:])[:num_targets] + 1
    target_index[row, :len(where)] = where - 1
    target_ids[row, :len(where)] = batch["tokens"][row, where]
    target_weight[row, :len(where)] = 1.0
  out = {k: batch[k] for k in ("tokens", "positions", "attention_mask", "source_tokens",
                               "source_mask") if k in batch}
  return dict(out, target_index=target_index, target_ids=target_ids, target_weight=target_weight)
