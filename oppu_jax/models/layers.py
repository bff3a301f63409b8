"""Building blocks shared by the model and the adapters: matmul with a dtype policy, RMSNorm, RoPE,
grouped-query attention. Pure functions on arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The mask value: large and finite so a fully masked row (a padding query) gives a uniform
# softmax instead of NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def matmul(x: jax.Array, w: jax.Array, compute_dtype=jnp.float32) -> jax.Array:
  """x [..., d_in] @ w [d_in, d_out] -> f32 [..., d_out].

  With compute_dtype=bfloat16 the inputs are cast to bf16 and XLA accumulates in f32: on this CPU
  (avx512_bf16) that is ~2x the f32 GEMM rate, while plain bf16 outputs are slower (DESIGN §6).
  The backward pass is bf16-in / f32-accumulate too (see `_bf16_matmul`).

  `w` may also be a frozen bf16 weight carried as its uint16 bit pattern (`frozen_bits`); it gets
  no gradient.
  """
  if w.dtype == jnp.uint16:
    return _frozen_bf16_matmul(x, w)
  if compute_dtype == jnp.float32:
    return jnp.matmul(x.astype(jnp.float32), w.astype(jnp.float32))
  return _bf16_matmul(x, w)


def frozen_bits(w: jax.Array) -> jax.Array:
  """A frozen bf16 weight stack as uint16 bits, for a `lax.scan` to slice.

  Why: XLA:CPU converts a bf16 stack that a scan slices to f32 outside the loop and back to bf16
  inside it, every step (0.1-0.25 s per SmolLM2 weight stack per training step); it leaves an
  integer stack alone. `matmul` reinterprets the bits. Other dtypes pass through unchanged.
  """
  if w.dtype != jnp.bfloat16:
    return w
  return jax.lax.bitcast_convert_type(w, jnp.uint16)


def frozen_bits_view(w: jax.Array) -> jax.Array:
  """`frozen_bits` for a weight that lives in host memory, without a copy.

  Inside a jit, XLA:CPU materialises the bitcast (0.27 s per SmolLM2 training step); a numpy view
  of the CPU buffer reinterprets it for free. Only for CPU-resident, unsharded bf16 arrays; others
  pass through unchanged.
  """
  if w.dtype != jnp.bfloat16 or not _on_one_cpu_device(w):
    return w
  return jax.device_put(np.asarray(w).view(np.uint16), next(iter(w.devices())))


def _on_one_cpu_device(w) -> bool:
  devices = getattr(w, "devices", lambda: set())()
  return len(devices) == 1 and next(iter(devices)).platform == "cpu"


def _dot_f32(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _transposed(w: jax.Array) -> jax.Array:
  # The barrier makes XLA materialise W^T: a bf16 dot that contracts the right operand's last
  # dimension misses XLA:CPU's fast kernel (62 vs 172 GFLOP/s at SmolLM2's shapes).
  return jax.lax.optimization_barrier(jnp.swapaxes(w, -1, -2))


def _weight_grad(xb: jax.Array, gb: jax.Array, w_ndim: int) -> jax.Array:
  """dW for y = x @ W, summed over x's leading dims (W may carry a leading batch axis)."""
  if w_ndim == 2:
    return jnp.einsum("...i,...o->io", xb, gb, preferred_element_type=jnp.float32)
  return jnp.einsum("...ti,...to->...io", xb, gb, preferred_element_type=jnp.float32)


def _from_bits(a):
  return jax.lax.bitcast_convert_type(a, jnp.bfloat16)


def _residual(a: jax.Array) -> jax.Array:
  """What the backward pass keeps of a matmul input.

  bf16 halves the memory, but XLA:CPU stores the layer scan's stacked bf16 residuals as f32 and
  converts them outside the loop (at 8 users x 4 rows: 3.3 of a 26.6 s step); there the input is
  kept as it came and cast in the backward.
  """
  return a if _on_cpu() else a.astype(jnp.bfloat16)


def _on_cpu() -> bool:
  return jax.default_backend() == "cpu"


# JAX's own transpose of dot(bf16, bf16 -> f32) receives an f32 cotangent and runs the backward
# GEMMs in f32, ~2x slower here. These VJPs apply the usual mixed-precision rule instead: cast the
# cotangent to bf16 and accumulate in f32.
@jax.custom_vjp
def _bf16_matmul(x, w):
  return _dot_f32(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))


def _bf16_matmul_fwd(x, w):
  out = _dot_f32(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  return out, (_residual(x), _residual(w), jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _bf16_matmul_bwd(res, g):
  x, w, x_like, w_like = res
  xb, wb, gb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), g.astype(jnp.bfloat16)
  dx = _dot_f32(gb, _transposed(wb)).astype(x_like.dtype)
  return dx, _weight_grad(xb, gb, wb.ndim).astype(w_like.dtype)


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


@jax.custom_vjp
def _frozen_bf16_matmul(x, w_bits):
  return _dot_f32(x.astype(jnp.bfloat16), _from_bits(w_bits))


def _frozen_fwd(x, w_bits):
  return _frozen_bf16_matmul(x, w_bits), (w_bits, jnp.zeros((0,), x.dtype))


def _frozen_bwd(res, g):
  w_bits, x_like = res
  dx = _dot_f32(g.astype(jnp.bfloat16), _transposed(_from_bits(w_bits))).astype(x_like.dtype)
  return dx, np.zeros(w_bits.shape, jax.dtypes.float0)


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
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, compute_dtype=jnp.float32
) -> jax.Array:
  """Grouped-query attention.

  q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim];
  mask: [batch, q_len, kv_len] bool (True = may attend). Returns [batch, q_len, heads, head_dim].
  compute_dtype applies to the two einsums on accelerators; on CPU they run in f32 (see below).
  """
  b, t, h, d = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(b, t, kv_heads, h // kv_heads, d) * (d**-0.5)
  # In f32 on CPU, for the reason given in `_residual`: the score and value einsums are ~4 % of
  # SmolLM2's FLOPs at 128 tokens, and their bf16 residuals cost more than the f32 GEMMs.
  dt = jnp.float32 if _on_cpu() else compute_dtype
  scores = jnp.einsum(
      "btkgd,bskd->bkgts", q.astype(dt), k.astype(dt), preferred_element_type=jnp.float32
  )
  scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum(
      "bkgts,bskd->btkgd", probs.astype(dt), v.astype(dt), preferred_element_type=jnp.float32
  )
  return out.reshape(b, t, h, d)
