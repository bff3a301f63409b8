"""The per-user optimizer: AdamW with gradient-norm clipping, and the reference's learning-rate
schedule (linear warm-up then linear decay), evaluated on each user's own step count."""

from __future__ import annotations

import math

import optax


def adamw_without_lr(weight_decay: float, clip_norm: float) -> optax.GradientTransformation:
  """Clip -> Adam -> decoupled weight decay; the caller multiplies by -lr.

  The learning rate stays outside the transformation because every user has its own schedule
  length (its history size), which a traced per-user scalar handles without recompiling.
  """
  parts = []
  if clip_norm and clip_norm > 0:
    parts.append(optax.clip_by_global_norm(clip_norm))
  parts += [optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
            optax.add_decayed_weights(weight_decay)]
  return optax.chain(*parts)


def linear_schedule(step: int, total_steps: int, warmup_ratio: float, peak_lr: float) -> float:
  """transformers' get_linear_schedule_with_warmup, with warm-up steps = ceil(ratio * total).

  As there, the first update (step 0) of a schedule with warm-up uses lr 0.
  """
  warmup = math.ceil(total_steps * warmup_ratio)
  if step < warmup:
    return peak_lr * step / max(1, warmup)
  return peak_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))
