"""LoRA as a pure pytree: y = x W + (alpha / r) * dropout(x) A B, with A random and B zero.

Adapter tree: {"layers": {target: {"a": [layers, d_in, r], "b": [layers, r, d_out]}}}.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from oppu_jax.models.layers import matmul
from oppu_jax.models.llama import PROJECTIONS, LlamaConfig, layer_shapes


@dataclasses.dataclass(frozen=True)
class Lora:
  targets: tuple[str, ...] = ("q", "v")
  rank: int = 8
  alpha: float = 8.0
  dropout: float = 0.0

  def __post_init__(self):
    bad = [t for t in self.targets if t not in PROJECTIONS]
    if bad:
      raise ValueError(f"peft.targets: unknown projection(s) {bad}; choose from {PROJECTIONS}")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def init(self, config: LlamaConfig, key: jax.Array, embed: jax.Array | None = None) -> dict:
    """A fresh adapter: A ~ kaiming-uniform (as PEFT initialises it), B = 0."""
    del embed
    shapes = layer_shapes(config)
    layers = {}
    for i, target in enumerate(self.targets):
      d_in, d_out = shapes[target]
      # PEFT uses torch's kaiming_uniform_(a=sqrt(5)) on A [r, d_in]: bound = 1 / sqrt(d_in).
      bound = 1.0 / math.sqrt(d_in)
      a = jax.random.uniform(
          jax.random.fold_in(key, i), (config.num_layers, d_in, self.rank), jnp.float32,
          -bound, bound,
      )
      b = jnp.zeros((config.num_layers, self.rank, d_out), jnp.float32)
      layers[target] = {"a": a, "b": b}
    return {"layers": layers}

  def project(self, name, x, w, adapter_layer, rng, compute_dtype=jnp.float32):
    y = matmul(x, w, compute_dtype)
    if name not in self.targets:
      return y
    lora = adapter_layer[name]
    if self.dropout > 0 and rng is not None:
      keep = jax.random.bernoulli(rng, 1.0 - self.dropout, x.shape)
      x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
    return y + self.scale * matmul(matmul(x, lora["a"], compute_dtype), lora["b"], compute_dtype)

  def prefix(self, adapter):
    return None

  def delta(self, adapter: dict, target: str) -> jax.Array:
    """The weight update [layers, d_in, d_out] this adapter adds to `target`."""
    lora = adapter["layers"][target]
    return self.scale * jnp.einsum("lir,lro->lio", lora["a"], lora["b"])
