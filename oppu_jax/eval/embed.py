"""Text embeddings from the base LLM, for the behaviour-shift analysis (the M history items least
similar to the query, `retrieval.least_similar_history`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.models.llama import Llama, with_frozen_bits
from oppu_jax.models.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def mean_pooled_embedder(
    model: Llama,
    tokenizer: Tokenizer,
    *,
    batch_size: int = 16,
    max_tokens: int = 256,
) -> Callable[[list[str]], np.ndarray]:
  """texts -> float32 [n, hidden]: the mean of the model's final-normed hidden states over each
  text's tokens, L2-normalised (an empty text gives a zero vector).

  The paper embeds with DeBERTa-v3; this uses the base LLM instead, so the analysis runs offline
  with the model already loaded. Its vectors are weaker for similarity (a causal LM's mean
  state, not a trained sentence encoder). Texts are cut to their first `max_tokens` tokens
  (logged), right-padded to a power-of-two bucket (at least 16) in batches of `batch_size`
  rows, so a run compiles a few programs; a text's vector does not depend on its batch.
  """
  graphdef, state = nnx.split(model)
  state = with_frozen_bits(state)  # bf16 stacks as free uint16 views (layers.frozen_bits)
  pool = _pool_fn(graphdef)
  buckets = _buckets(max_tokens)
  pad_id = tokenizer.pad_id

  def embed(texts: Sequence[str]) -> np.ndarray:
    ids = [tokenizer.encode(t) for t in texts]
    cut = sum(len(i) > max_tokens for i in ids)
    if cut:
      log.info("embedding: %d of %d text(s) cut to their first %d tokens", cut, len(ids),
               max_tokens)
    ids = [i[:max_tokens] for i in ids]
    out = np.zeros((len(ids), model.config.hidden_size), np.float32)
    order = sorted((j for j in range(len(ids)) if ids[j]), key=lambda j: len(ids[j]))
    for start in range(0, len(order), batch_size):
      index = order[start:start + batch_size]
      t = next(b for b in buckets if b >= len(ids[index[-1]]))
      tokens, mask = _right_pad([ids[j] for j in index], batch_size, t, pad_id)
      out[index] = np.asarray(pool(state, tokens, mask))[:len(index)]
    return out

  return embed


def _buckets(max_tokens: int) -> list[int]:
  out, b = [], 16
  while b < max_tokens:
    out.append(b)
    b *= 2
  return out + [max_tokens]


@functools.cache
def _pool_fn(graphdef):
  # One jitted function per architecture (the weights are an argument, not constants), compiled
  # once per (batch, bucket) shape.
  @jax.jit
  def pool(state, tokens, mask):
    """tokens, mask: [B, T] right-padded -> [B, hidden] unit vectors."""
    model = nnx.merge(graphdef, state)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    hidden, _ = model(tokens, positions=positions, attention_mask=mask, return_hidden=True)
    w = mask[..., None].astype(jnp.float32)  # [B, T, 1]
    mean = (hidden * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)
    return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)

  return pool


def _right_pad(rows: list[list[int]], batch: int, length: int, pad_id: int):
  """-> tokens int32, mask bool, both [batch, length]. Filler rows hold one real pad token, so no
  row is fully masked; their vectors are dropped."""
  tokens = np.full((batch, length), pad_id, np.int32)
  mask = np.zeros((batch, length), bool)
  for r in range(batch):
    ids = rows[r] if r < len(rows) else [pad_id]
    tokens[r, :len(ids)] = ids
    mask[r, :len(ids)] = True
  return tokens, mask
