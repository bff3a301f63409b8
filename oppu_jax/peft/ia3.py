"""(IA)³ as a pure pytree: learned vectors that rescale the attention keys and values and the
FFN intermediate activation, initialised to ones (so a fresh adapter changes nothing).

As in HF PEFT: for an attention target the vector scales the projection's output [d_out]; for a
feed-forward target (`down`) it scales the projection's input [d_in], i.e. the activation.
Adapter tree: {"layers": {target: [layers, d_out or d_in]}}.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from oppu_jax.models.layers import matmul
from oppu_jax.models.llama import PROJECTIONS, LlamaConfig, layer_shapes


@dataclasses.dataclass(frozen=True)
class IA3:
  targets: tuple[str, ...] = ("k", "v", "down")
  feedforward: tuple[str, ...] = ("down",)

  def __post_init__(self):
    bad = [t for t in self.targets + self.feedforward if t not in PROJECTIONS]
    if bad:
      raise ValueError(f"peft.targets: unknown projection(s) {bad}; choose from {PROJECTIONS}")

  def init(self, config: LlamaConfig, key: jax.Array, embed: jax.Array | None = None) -> dict:
    del key, embed
    shapes = layer_shapes(config)
    layers = {}
    for target in self.targets:
      d_in, d_out = shapes[target]
      size = d_in if target in self.feedforward else d_out
      layers[target] = jnp.ones((config.num_layers, size), jnp.float32)
    return {"layers": layers}

  def project(self, name, x, w, adapter_layer, rng, compute_dtype=jnp.float32):
    del rng
    if name not in self.targets:
      return matmul(x, w, compute_dtype)
    scale = adapter_layer[name]
    if name in self.feedforward:
      return matmul(x * scale, w, compute_dtype)
    return matmul(x, w, compute_dtype) * scale

  def prefix(self, adapter):
    return None
