"""The FLOP model and the GEMM peak of the training benchmarks (train_bench.py, scale.py).

Model FLOPs are the minimum LoRA training needs, per real token: 4 x body params (forward, and the
backward to activations; the frozen base needs no weight gradients), 6 x LoRA params, 12 x layers
x seq_len x attention width (dense scores and values, forward + backward); and per answer token
4 x hidden x vocab for the logits. A reference that computes logits at every position does work
the loss does not need: it is not counted. The usual 6N convention would report ~1.47x the MFU
numbers these give. MFU divides them by the n^3 GEMM rate of `measure_gemm_peaks`, measured in the
same run because the machine is shared.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp

from train_workload import RANK, TARGETS


# ----------------------------------------------------------------------------------------------
# The FLOP model: minimum model FLOPs of LoRA training, from the tokens it sees.

def data_counts(plans) -> dict:
  """Real tokens, answer (target) tokens and padded slots over the whole run, all users."""
  real = sum(p.epochs * sum(len(e) for e in p.examples) for p in plans)
  targets = sum(p.epochs * sum(int(e.loss_mask[1:].sum()) for e in p.examples) for p in plans)
  padded = sum(p.total_steps * p.batch_size * p.seq_len for p in plans)
  return {"real": real, "targets": targets, "padded": padded}

def model_flops(config, plans) -> float:
  """Minimum model FLOPs of the whole run (see the module docstring)."""
  c = data_counts(plans)
  return (c["real"] * flops_per_token(config, plans[0].seq_len)
          + c["targets"] * flops_per_target(config))

def flops_per_target(config) -> float:
  """The logits of one answer token, forward and backward to the hidden state."""
  return 4 * config.hidden_size * config.vocab_size

def flops_per_token(config, seq_len: int) -> float:
  """LoRA training FLOPs of one real token at sequence length seq_len (module docstring)."""
  L, d = config.num_layers, config.hidden_size
  attn_width = config.num_heads * config.dim_per_head
  shapes = {  # [d_in, d_out] per projection
      "q": (d, attn_width), "k": (d, config.num_kv_heads * config.dim_per_head),
      "v": (d, config.num_kv_heads * config.dim_per_head), "o": (attn_width, d),
      "gate": (d, config.intermediate_size), "up": (d, config.intermediate_size),
      "down": (config.intermediate_size, d),
  }
  body = L * sum(i * o for i, o in shapes.values())
  lora = L * sum(shapes[t][0] * RANK + RANK * shapes[t][1] for t in TARGETS)
  return 4 * body + 6 * lora + 12 * L * seq_len * attn_width

# ----------------------------------------------------------------------------------------------
# GEMM peaks: the denominator of MFU, measured now because the machine is shared.

def measure_gemm_peaks(include_torch: bool, threads: int, n: int = 2048,
                       reps: int = 5) -> dict[str, float]:
  """FLOP/s of an n^3 matmul, best of `reps`, per dtype path."""
  flops = 2 * n**3
  peaks = {}
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  for name, dtype in (("jax f32", jnp.float32), ("jax bf16", jnp.bfloat16)):
    # bf16 inputs with f32 accumulation: the path our compute_dtype=bfloat16 uses.
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    x, y = a.astype(dtype), b.astype(dtype)
    peaks[name] = flops / _best_time(lambda: f(x, y).block_until_ready(), reps)
  if include_torch:
    import torch

    torch.set_num_threads(threads or os.cpu_count())
    for name, dtype in (("torch f32", torch.float32), ("torch bf16", torch.bfloat16)):
      x, y = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
      peaks[name] = flops / _best_time(lambda: x @ y, reps)
  print("GEMM 2048^3 peak: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()),
        flush=True)
  return peaks

def _best_time(fn, reps):
  fn()  # warm-up (and compilation)
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)
