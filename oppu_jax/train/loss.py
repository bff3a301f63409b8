"""The training loss both trainers share (multi_user.py per user, hyper.py through generated
adapters): cross-entropy on a batch's target tokens, logits computed only at those positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from oppu_jax.models.adapted import forward


def loss_terms(graphdef, peft, adapter, base, batch, key, remat=False):
  """(summed cross-entropy over the batch's target tokens, their summed weight) of the model
  (`graphdef` merged with the frozen `base` state) under `peft`'s `adapter`."""
  model = nnx.merge(graphdef, base)
  if remat:
    model.config = model.config.replace(remat=True)
  hidden = forward(model, peft, adapter, **model.conventions.inputs(batch), rng=key,
                   return_hidden=True)  # [B, T, D]
  at_targets = jnp.take_along_axis(hidden, batch["target_index"][..., None], axis=1)  # [B,K,D]
  with jax.named_scope("vocab_head"):  # the LM head and log-softmax over the whole vocabulary
    logits = model.logits(at_targets)  # [B, K, V]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    gold = jnp.take_along_axis(logits, batch["target_ids"][..., None], axis=-1)[..., 0]
  weight = batch["target_weight"]
  return jnp.sum((log_z - gold) * weight), jnp.sum(weight)
