"""The backend policy: every XLA:CPU workaround of the model, chosen once per model.

Config key `model.backend`: "auto" (the default: "cpu" when JAX runs on the CPU, else "xla"),
"cpu" or "xla". `LlamaConfig` resolves it when it is built (the loader passes the key), so a
model's config always names a concrete policy and nothing decides per call. The model reaches
the policy through `Llama.matmul` / `layers.matmul(..., policy)` and `frozen_base`.

"cpu" keeps what makes XLA:CPU fast (measured on avx512_bf16, SmolLM2-135M):
- frozen bf16 projection stacks ride the layer scan as uint16 bits (`frozen_bits`);
- the bf16 matmul VJPs materialise W^T behind an optimization_barrier (`transposed`);
- matmul residuals stay in their input dtype (`residual`);
- the attention einsums run in f32;
- the trainer loops over the users of its step rather than vmapping them.
"xla" is the plain path for GPU/TPU: bf16 weights as they are, JAX's transpose, bf16 residuals,
attention in the compute dtype. Both give the same numbers within bf16 rounding
(tests/models/test_backend.py).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.errors import ConfigError

BACKENDS = ("auto", "cpu", "xla")


@dataclasses.dataclass(frozen=True)
class Policy:
  """What a backend needs; hashable, so it can be a static argument."""

  name: str
  frozen_bits: bool  # bf16 projection stacks carried as uint16 bits through the scan
  transpose_barrier: bool  # bf16 VJPs materialise W^T (XLA:CPU's fast GEMM needs it)
  residual_in_input_dtype: bool  # matmul residuals not cast to bf16
  f32_attention: bool  # attention einsums in f32 whatever the compute dtype
  # The trainer loops over users inside its step instead of vmapping them (train.users_per_pass
  # = 0): a compute-bound CPU loses cache locality on a U-times larger working set (SmolLM2,
  # 8 users x 4 x 128 tokens: 28 % slower per token vmapped than one by one).
  loop_users: bool


POLICIES = {
    "cpu": Policy("cpu", True, True, True, True, True),
    "xla": Policy("xla", False, False, False, False, False),
}


def resolve(name: str, key: str = "model.backend") -> str:
  """"auto" | "cpu" | "xla" -> "cpu" | "xla"; a ConfigError naming `key` for anything else."""
  if name not in BACKENDS:
    raise ConfigError(f"{key}: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
  if name == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  return name


def policy(name: str | Policy) -> Policy:
  """The policy called `name` ("auto" resolves here: for callers without a model config)."""
  return name if isinstance(name, Policy) else POLICIES[resolve(name)]


# The most bytes of frozen projections that `frozen_base(..., transposed=True)` doubles: the
# SmolLM2-135M default has 0.2 GB of them, a 1B model 2 GB; a 7B base (13 GB) would not fit twice
# in a 24 GiB host, and keeps paying the per-step transposes instead.
TRANSPOSED_COPY_MAX_BYTES = 4 << 30


class FrozenPair(NamedTuple):
  """A frozen bf16 projection stack as uint16 bits with its transpose beside it, both sliced by
  the layer scan: the backward pass reads W^T instead of materialising it per layer, per user and
  per step (`transposed`): in pipeline_bench's profile, transposes and copies fell from 14 % to
  7 % of a per-user training step's kernel time on SmolLM2 (benchmarks/README.md)."""

  bits: jax.Array  # [..., d_in, d_out]
  bits_t: jax.Array  # [..., d_out, d_in]


def frozen_base(state, model_config, table, transposed: bool = False):
  """The base model's state for a step that never differentiates it: under "cpu", its bf16
  projection stacks as uint16 views (`frozen_bits_view`), which the model reads unchanged and
  XLA:CPU neither converts nor copies in the layer scan. Identity under "xla". `table`: the
  model's weight table (`model.weight_table()`), which says which weights are projections.

  transposed: for a step that backpropagates through the base (training an adapter), also keep
  each projection's transpose (`FrozenPair`), computed once here, if the projections fit
  TRANSPOSED_COPY_MAX_BYTES; a prediction never needs it."""
  if not policy(model_config.backend).frozen_bits:
    return state
  paths = {w.path for w in table.weights if w.projection is not None}

  def is_projection(path):
    names = tuple(getattr(k, "key", None) for k in path)
    return any(names[:len(p)] == p for p in paths)

  pair = transposed and TRANSPOSED_COPY_MAX_BYTES >= sum(
      leaf.nbytes for path, leaf in jax.tree_util.tree_leaves_with_path(state)
      if is_projection(path))

  def convert(path, leaf):
    if not is_projection(path):
      return leaf
    bits = frozen_bits_view(leaf)
    if pair and bits is not leaf:
      return FrozenPair(bits, _transposed_bits(leaf))
    return bits

  return jax.tree_util.tree_map_with_path(convert, state)


def _transposed_bits(w: jax.Array) -> jax.Array:
  """W^T of a CPU-resident bf16 stack as a contiguous uint16 array, on w's device."""
  t = np.ascontiguousarray(np.swapaxes(np.asarray(w).view(np.uint16), -1, -2))
  return jax.device_put(t, next(iter(w.devices())))


def frozen_bits(w: jax.Array) -> jax.Array:
  """A frozen bf16 weight stack as uint16 bits, for a `lax.scan` to slice.

  Why: XLA:CPU converts a bf16 stack that a scan slices to f32 outside the loop and back to bf16
  inside it, every step (0.1-0.25 s per SmolLM2 weight stack per training step); it leaves an
  integer stack alone. `layers.matmul` reinterprets the bits. Other dtypes (and a `FrozenPair`,
  already bits) pass through.
  """
  if isinstance(w, FrozenPair) or w.dtype != jnp.bfloat16:
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


def from_bits(a: jax.Array) -> jax.Array:
  return jax.lax.bitcast_convert_type(a, jnp.bfloat16)


def transposed(w: jax.Array, p: Policy) -> jax.Array:
  """W^T for a bf16 VJP. Under "cpu" the barrier makes XLA materialise it: a bf16 dot that
  contracts the right operand's last dimension misses XLA:CPU's fast kernel (62 vs 172 GFLOP/s
  at SmolLM2's shapes)."""
  wt = jnp.swapaxes(w, -1, -2)
  return jax.lax.optimization_barrier(wt) if p.transpose_barrier else wt


def residual(a: jax.Array, p: Policy) -> jax.Array:
  """What the backward pass keeps of a matmul input.

  bf16 halves the memory, but XLA:CPU stores the layer scan's stacked bf16 residuals as f32 and
  converts them outside the loop (at 8 users x 4 rows: 3.3 of a 26.6 s step); under "cpu" the
  input is kept as it came and cast in the backward.
  """
  return a if p.residual_in_input_dtype else a.astype(jnp.bfloat16)


def attention_dtype(compute_dtype, p: Policy):
  """The attention einsums' input dtype. f32 under "cpu", for the reason given in `residual`:
  they are ~4 % of SmolLM2's FLOPs at 128 tokens, and their bf16 residuals cost more."""
  return jnp.float32 if p.f32_attention else compute_dtype


def cache_dtype(model_config):
  """The KV cache's dtype: what attention reads (f32 under "cpu"; the compute dtype under
  "xla", where an f32 cache doubled the memory of beam search for nothing: attention casts it to
  bf16 anyway, and a 7B model's 4-beam cache did not fit a v5e chip)."""
  return attention_dtype(jnp.dtype(model_config.compute_dtype), policy(model_config.backend))


def _on_one_cpu_device(w) -> bool:
  devices = getattr(w, "devices", lambda: set())()
  return len(devices) == 1 and next(iter(devices)).platform == "cpu"
