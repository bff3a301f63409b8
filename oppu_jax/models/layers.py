"""Building blocks shared by the model and the adapters: matmul with a dtype policy, RMSNorm, RoPE,
grouped-query attention. Pure functions on arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The mask value: large and finite so a fully masked row (a padding query) gives a uniform
# softmax instead of NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def matmul(x: jax.Array, w: jax.Array, compute_dtype=jnp.float32) -> jax.Array:
  """x [..., d_in] @ w [d_in, d_out] -> f32 [..., d_out].

  With compute_dtype=bfloat16 the inputs are cast to bf16 and XLA accumulates in f32: on this CPU
  (avx512_bf16) that is ~1.6x the f32 GEMM rate, while plain bf16 outputs are slower (DESIGN §6).
  """
  if compute_dtype == jnp.float32:
    return jnp.matmul(x.astype(jnp.float32), w.astype(jnp.float32))
  return jnp.matmul(
      x.astype(compute_dtype), w.astype(compute_dtype), preferred_element_type=jnp.float32
  )


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  x = x.astype(jnp.float32)
  x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
  return x * weight.astype(jnp.float32)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, Hugging Face's half-split layout.

  x: [batch, seq, heads, head_dim]; positions: [batch, seq] int.
  """
  head_dim = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, seq, head_dim/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, compute_dtype=jnp.float32
) -> jax.Array:
  """Grouped-query attention.

  q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim];
  mask: [batch, q_len, kv_len] bool (True = may attend). Returns [batch, q_len, heads, head_dim].
  """
  b, t, h, d = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(b, t, kv_heads, h // kv_heads, d) * (d**-0.5)
  dt = compute_dtype
  scores = jnp.einsum(
      "btkgd,bskd->bkgts", q.astype(dt), k.astype(dt), preferred_element_type=jnp.float32
  )
  scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum(
      "bkgts,bskd->btkgd", probs.astype(dt), v.astype(dt), preferred_element_type=jnp.float32
  )
  return out.reshape(b, t, h, d)
