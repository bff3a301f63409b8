"""(IA)³ as a pure pytree: learned vectors that rescale the attention keys and values and the
FFN intermediate activation, initialised to ones (so a fresh adapter changes nothing).

As in HF PEFT: for an attention target the vector scales the projection's output [d_out]; for a
feed-forward target (`down`) it scales the projection's input [d_in], i.e. the activation.
Adapter tree: {"layers": {target: [layers, d_out or d_in]}}. HF PEFT tensors per layer i:
`...layers.{i}.self_attn.k_proj.ia3_l` [d_out, 1]; feed-forward `...mlp.down_proj.ia3_l` [1, d_in].
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.models.weights import WeightTable
from oppu_jax.peft import hf_format
from oppu_jax.peft.method import BuildContext, register


@register
@dataclasses.dataclass(frozen=True)
class IA3:
  name: ClassVar[str] = "ia3"
  peft_type: ClassVar[str] = "IA3"

  targets: tuple[str, ...] = ("k", "v", "down")
  feedforward: tuple[str, ...] = ("down",)

  @classmethod
  def from_config(cls, peft_config, context: BuildContext) -> "IA3":
    """The paper's (IA)³ on k, v and down, whatever `peft.targets` says: those are LoRA's
    (q, v by default). In T5 the names cover every stack ("k": encoder, decoder and cross-
    attention; "down": both feed-forwards, HF's `wo`), as HF PEFT's T5 defaults do."""
    del peft_config
    table = context.table
    return cls(targets=table.check_projections(cls.targets + cls.feedforward),
               feedforward=table.check_projections(cls.feedforward))

  def init(self, table: WeightTable, key: jax.Array, embed: jax.Array | None = None) -> dict:
    del key, embed
    table.check_projections(self.targets + self.feedforward)
    layers = {}
    for target in self.targets:
      weight = table.projections[target]
      d_in, d_out = weight.shape
      size = d_in if target in self.feedforward else d_out
      layers[target] = jnp.ones((weight.num_layers, size), jnp.float32)
    return {"layers": layers}

  def scaled(self, adapter: dict, factor: float) -> dict:
    """The adapter whose rescaling departs `factor` times as far from 1 (l -> 1 + factor (l - 1));
    leaves may carry a leading users axis."""
    return {"layers": {t: 1 + factor * (v - 1) for t, v in adapter["layers"].items()}}

  def project(self, name, x, w, adapter_layer, rng, matmul):
    del rng
    if name not in self.targets:
      return matmul(x, w)
    scale = adapter_layer[name]
    if name in self.feedforward:
      return matmul(x * scale, w)
    return matmul(x, w) * scale

  def prefix(self, adapter):
    return None

  # -- HF PEFT ----------------------------------------------------------------------------------

  def to_hf(self, adapter: dict, table: WeightTable, model_config=None):
    del model_config
    feedforward = [t for t in self.feedforward if t in self.targets]
    config = {
        **_DEFAULTS, "target_modules": hf_format.hf_targets(table, self.targets),
        "feedforward_modules": hf_format.hf_targets(table, feedforward),
    }
    tensors = {}
    for target in self.targets:
      vec = np.asarray(adapter["layers"][target], np.float32)  # [L, d_in or d_out]
      for i in range(vec.shape[0]):
        # PEFT scales the input [1, d_in] of a feed-forward module, the output [d_out, 1] otherwise.
        v = vec[i][None, :] if target in feedforward else vec[i][:, None]
        tensors[hf_format.tensor_name(table, i, target, "ia3_l")] = v
    return config, tensors

  @classmethod
  def from_hf(cls, hf_config, tensors, table, model_config, where):
    del model_config
    hf_format.reject_features(hf_config, where.config, _UNSUPPORTED)
    targets = hf_format.parse_targets(hf_config.get("target_modules"), table, where.config)
    feedforward = hf_format.parse_targets(hf_config.get("feedforward_modules") or [], table,
                                          where.config)
    ia3 = cls(targets=targets, feedforward=tuple(t for t in feedforward if t in targets))
    want = {}
    for target in targets:
      weight = table.projections[target]
      d_in, d_out = weight.shape
      shape = (1, d_in) if target in ia3.feedforward else (d_out, 1)
      for i in range(weight.num_layers):
        want[hf_format.tensor_name(table, i, target, "ia3_l")] = shape
    hf_format.check_tensors(tensors, want, where.weights)
    layers = {t: hf_format.stack_layers(
        [tensors[hf_format.tensor_name(table, i, t, "ia3_l")].reshape(-1)
         for i in range(table.projections[t].num_layers)]) for t in targets}
    return ia3, {"layers": layers}


# What PEFT 0.21.2 writes for an (IA)³ besides the common fields and those set in to_hf.
_DEFAULTS = {"exclude_modules": None, "fan_in_fan_out": False, "init_ia3_weights": True}
_UNSUPPORTED = ("fan_in_fan_out", "modules_to_save", "exclude_modules")
