"""Building blocks shared by the model and the adapters: matmul with a dtype policy, RMSNorm, RoPE,
grouped-query attention. Pure functions on arrays; backend tricks come from `backend.Policy`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.models import backend

# The mask value: large and finite so a fully masked row (a padding query) gives a uniform
# softmax instead of NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def matmul(x: jax.Array, w: jax.Array, compute_dtype=jnp.float32,
           policy: str | backend.Policy = "auto") -> jax.Array:
  """x [..., d_in] @ w [d_in, d_out] -> f32 [..., d_out]; the model's one matmul hook.

  With compute_dtype=bfloat16 the inputs are cast to bf16 and XLA accumulates in f32: on an
  avx512_bf16 CPU that is ~2x the f32 GEMM rate, while plain bf16 outputs are slower
  (benchmarks/README.md).
  The backward pass is bf16-in / f32-accumulate too (see `_bf16_matmul`). `policy` is the
  model's backend policy (`Llama.matmul` binds it; "auto" is for callers without a model).

  `w` may also be a frozen bf16 weight carried as its uint16 bit pattern
  (`backend.frozen_bits`), or as those bits with its transpose (`backend.FrozenPair`); it gets
  no gradient.
  """
  p = backend.policy(policy)
  if isinstance(w, backend.FrozenPair) or w.dtype == jnp.uint16:
    return _frozen_bf16_matmul(p, x, w)
  if compute_dtype == jnp.float32:
    return jnp.matmul(x.astype(jnp.float32), w.astype(jnp.float32))
  return _bf16_matmul(p, x, w)


def _dot_f32(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _weight_grad(xb: jax.Array, gb: jax.Array, w_ndim: int) -> jax.Array:
  """dW for y = x @ W, summed over x's leading dims (W may carry a leading batch axis)."""
  if w_ndim == 2:
    return jnp.einsum("...i,...o->io", xb, gb, preferred_element_type=jnp.float32)
  return jnp.einsum("...ti,...to->...io", xb, gb, preferred_element_type=jnp.float32)


# JAX's own transpose of dot(bf16, bf16 -> f32) receives an f32 cotangent and runs the backward
# GEMMs in f32, ~2x slower here. These VJPs apply the usual mixed-precision rule instead: cast the
# cotangent to bf16 and accumulate in f32.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bf16_matmul(p, x, w):
  return _dot_f32(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))


def _bf16_matmul_fwd(p, x, w):
  # symbolic_zeros: a weight nothing differentiates (a frozen base under the "xla" policy) gets
  # no weight-gradient GEMM at all, rather than one that XLA must find dead and remove.
  x, w, w_trained = x.value, w.value, w.perturbed
  out = _dot_f32(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  res = (backend.residual(x, p), backend.residual(w, p), jnp.zeros((0,), x.dtype),
         jnp.zeros((0,), w.dtype) if w_trained else None)
  return out, res


def _bf16_matmul_bwd(p, res, g):
  x, w, x_like, w_like = res
  xb, wb, gb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), g.astype(jnp.bfloat16)
  dx = _dot_f32(gb, backend.transposed(wb, p)).astype(x_like.dtype)
  if w_like is None:
    return dx, None
  return dx, _weight_grad(xb, gb, wb.ndim).astype(w_like.dtype)


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _frozen_bf16_matmul(p, x, w):
  bits = w.bits if isinstance(w, backend.FrozenPair) else w
  return _dot_f32(x.astype(jnp.bfloat16), backend.from_bits(bits))


def _frozen_fwd(p, x, w):
  return _frozen_bf16_matmul(p, x, w), (w, jnp.zeros((0,), x.dtype))


def _frozen_bwd(p, res, g):
  w, x_like = res
  if isinstance(w, backend.FrozenPair):
    wt = backend.from_bits(w.bits_t)  # transposed once per run, not here
  else:
    wt = backend.transposed(backend.from_bits(w), p)
  dx = _dot_f32(g.astype(jnp.bfloat16), wt).astype(x_like.dtype)
  return dx, jax.tree.map(lambda a: np.zeros(a.shape, jax.dtypes.float0), w)


_frozen_bf16_matmul.defvjp(_frozen_fwd, _frozen_bwd)


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
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, compute_dtype=jnp.float32,
    policy: str | backend.Policy = "auto", *, scale: float | None = None,
    bias: jax.Array | None = None,
) -> jax.Array:
  """Grouped-query attention.

  q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim];
  mask: [batch, q_len, kv_len] bool (True = may attend). Returns [batch, q_len, heads, head_dim].
  compute_dtype applies to the two einsums unless the policy says f32 (`backend.attention_dtype`).
  scale: multiplies q (default head_dim**-0.5; T5 uses 1); bias: added to the scores, f32
  [batch or 1, heads, q_len, kv_len] (T5's relative position bias).
  """
  b, t, h, d = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(b, t, kv_heads, h // kv_heads, d) * (d**-0.5 if scale is None else scale)
  dt = backend.attention_dtype(compute_dtype, backend.policy(policy))
  scores = jnp.einsum(
      "btkgd,bskd->bkgts", q.astype(dt), k.astype(dt), preferred_element_type=jnp.float32
  )
  if bias is not None:
    scores = scores + bias.reshape(bias.shape[0], kv_heads, h // kv_heads, *bias.shape[2:])
  scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum(
      "bkgts,bskd->btkgd", probs.astype(dt), v.astype(dt), preferred_element_type=jnp.float32
  )
  return out.reshape(b, t, h, d)


def plain_project(matmul_fn):
  """The projection hook without an adapter: `project(name, x, w, adapter_layer, rng)` = x @ w
  through the model's own matmul."""
  def project(name, x, w, adapter_layer, rng):
    del name, adapter_layer, rng
    return matmul_fn(x, w)

  return project
