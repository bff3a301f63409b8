"""Prompt tuning as a pure pytree: n virtual token embeddings prepended to the input.

Adapter tree: {"prompt": [n_virtual, hidden]}. Initialised from the embeddings of a text (e.g.
the task instruction), cycled to length n as HF PEFT's TEXT init does, or randomly from the
vocabulary's embeddings.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from oppu_jax.models.layers import matmul
from oppu_jax.models.llama import LlamaConfig


@dataclasses.dataclass(frozen=True)
class PromptTuning:
  num_virtual_tokens: int = 20
  init_token_ids: tuple[int, ...] = ()  # token ids of the init text; empty = random vocab rows

  def init(self, config: LlamaConfig, key: jax.Array, embed: jax.Array | None = None) -> dict:
    """`embed` [vocab, hidden] is the base model's input embedding table."""
    if embed is None:
      raise ValueError("prompt tuning needs the base embedding table to initialise from")
    n = self.num_virtual_tokens
    if self.init_token_ids:
      ids = jnp.resize(jnp.asarray(self.init_token_ids, jnp.int32), (n,))
    else:
      ids = jax.random.randint(key, (n,), 0, config.vocab_size)
    return {"prompt": jnp.take(embed, ids, axis=0).astype(jnp.float32)}

  def project(self, name, x, w, adapter_layer, rng, compute_dtype=jnp.float32):
    del name, adapter_layer, rng
    return matmul(x, w, compute_dtype)

  def prefix(self, adapter) -> jax.Array:
    return adapter["prompt"]
