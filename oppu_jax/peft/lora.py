"""LoRA as a pure pytree: y = x W + (alpha / r) * dropout(x) A B, with A random and B zero.

Adapter tree: {"layers": {target: {"a": [layers, d_in, r], "b": [layers, r, d_out]}}}.
HF PEFT tensors per layer i (HF stores [out, in]): `...layers.{i}.self_attn.q_proj.lora_A.weight`
[r, d_in] and `...lora_B.weight` [d_out, r].
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.errors import AdapterFormatError
from oppu_jax.models.weights import WeightTable
from oppu_jax.peft import hf_format
from oppu_jax.peft.method import BuildContext, register


@register
@dataclasses.dataclass(frozen=True)
class Lora:
  name: ClassVar[str] = "lora"
  peft_type: ClassVar[str] = "LORA"
  can_merge: ClassVar[bool] = True

  targets: tuple[str, ...] = ("q", "v")
  rank: int = 8
  alpha: float = 8.0
  dropout: float = 0.0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  @classmethod
  def from_config(cls, peft_config, context: BuildContext) -> "Lora":
    """Reads targets, rank, alpha, dropout from the config section."""
    targets = context.table.check_projections(peft_config.targets, f"{context.key}.targets")
    return cls(targets=targets, rank=int(peft_config.rank), alpha=float(peft_config.alpha),
               dropout=float(peft_config.dropout))

  def init(self, table: WeightTable, key: jax.Array, embed: jax.Array | None = None) -> dict:
    """A fresh adapter: A ~ kaiming-uniform (as PEFT initialises it), B = 0."""
    del embed
    table.check_projections(self.targets)
    layers = {}
    for i, target in enumerate(self.targets):
      weight = table.projections[target]
      d_in, d_out = weight.shape
      # PEFT uses torch's kaiming_uniform_(a=sqrt(5)) on A [r, d_in]: bound = 1 / sqrt(d_in).
      bound = 1.0 / math.sqrt(d_in)
      a = jax.random.uniform(
          jax.random.fold_in(key, i), (weight.num_layers, d_in, self.rank), jnp.float32,
          -bound, bound,
      )
      b = jnp.zeros((weight.num_layers, self.rank, d_out), jnp.float32)
      layers[target] = {"a": a, "b": b}
    return {"layers": layers}

  def project(self, name, x, w, adapter_layer, rng, matmul):
    y = matmul(x, w)
    if name not in self.targets:
      return y
    lora = adapter_layer[name]
    # The scopes name these ops in a profile (benchmarks/pipeline_profile.py).
    if self.dropout > 0 and rng is not None:
      with jax.named_scope("dropout"):
        keep = jax.random.bernoulli(rng, 1.0 - self.dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
    with jax.named_scope("lora"):
      return y + self.scale * matmul(matmul(x, lora["a"]), lora["b"])

  def prefix(self, adapter):
    return None

  def delta(self, adapter: dict, target: str) -> jax.Array:
    """The weight update [layers, d_in, d_out] this adapter adds to `target`."""
    lora = adapter["layers"][target]
    return self.scale * jnp.einsum("lir,lro->lio", lora["a"], lora["b"])

  def scaled(self, adapter: dict, factor: float) -> dict:
    """The adapter whose update x A B is `factor` times this one's (B scaled); leaves may carry a
    leading users axis."""
    return {"layers": {t: {"a": ab["a"], "b": ab["b"] * factor}
                       for t, ab in adapter["layers"].items()}}

  def merge(self, layer_weights: dict, adapter: dict) -> dict:
    """{target: W + delta} for the adapted projections; W [layers, d_in, d_out] keeps its dtype."""
    return {t: (layer_weights[t].astype("float32") + self.delta(adapter, t)).astype(
        layer_weights[t].dtype) for t in self.targets}

  # -- HF PEFT ----------------------------------------------------------------------------------

  def to_hf(self, adapter: dict, table: WeightTable, model_config=None):
    del model_config
    alpha = int(self.alpha) if float(self.alpha).is_integer() else float(self.alpha)
    config = {
        **_DEFAULTS, "r": self.rank, "lora_alpha": alpha, "lora_dropout": float(self.dropout),
        "target_modules": hf_format.hf_targets(table, self.targets),
    }
    tensors = {}
    for target in self.targets:
      a = np.asarray(adapter["layers"][target]["a"], np.float32)  # [L, d_in, r]
      b = np.asarray(adapter["layers"][target]["b"], np.float32)  # [L, r, d_out]
      for i in range(a.shape[0]):
        tensors[hf_format.tensor_name(table, i, target, "lora_A.weight")] = a[i].T
        tensors[hf_format.tensor_name(table, i, target, "lora_B.weight")] = b[i].T
    return config, tensors

  @classmethod
  def from_hf(cls, hf_config, tensors, table, model_config, where):
    del model_config
    hf_format.reject_features(hf_config, where.config, _UNSUPPORTED)
    if hf_config.get("bias", "none") != "none":
      raise AdapterFormatError(f"{where.config}: bias {hf_config['bias']!r} is not supported "
                               "(only 'none')")
    targets = hf_format.parse_targets(hf_config.get("target_modules"), table, where.config)
    lora = cls(targets=targets, rank=hf_format.number(hf_config, "r", int, where.config),
               alpha=hf_format.number(hf_config, "lora_alpha", float, where.config),
               dropout=float(hf_config.get("lora_dropout") or 0.0))

    def name(i, target, leaf):
      return hf_format.tensor_name(table, i, target, leaf)

    want = {}
    for target in targets:
      weight = table.projections[target]
      d_in, d_out = weight.shape
      for i in range(weight.num_layers):
        want[name(i, target, "lora_A.weight")] = (lora.rank, d_in)
        want[name(i, target, "lora_B.weight")] = (d_out, lora.rank)
    hf_format.check_tensors(tensors, want, where.weights)
    layers = {}
    for target in targets:
      n = table.projections[target].num_layers
      layers[target] = {
          "a": hf_format.stack_layers([tensors[name(i, target, "lora_A.weight")].T
                                       for i in range(n)]),
          "b": hf_format.stack_layers([tensors[name(i, target, "lora_B.weight")].T
                                       for i in range(n)]),
      }
    return lora, {"layers": layers}


# What PEFT 0.21.2 writes for a LoRA besides the common fields and those set in to_hf.
_DEFAULTS = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "bias": "none",
    "corda_config": None, "ensure_weight_tying": False, "eva_config": None,
    "exclude_modules": None, "fan_in_fan_out": False, "init_lora_weights": True,
    "kasa_config": None, "layer_replication": None, "layers_pattern": None,
    "layers_to_transform": None, "loftq_config": {}, "lora_bias": False, "lora_ga_config": None,
    "megatron_config": None, "megatron_core": "megatron.core", "monteclora_config": None,
    "qalora_group_size": 16, "rank_pattern": {}, "target_parameters": None,
    "trainable_token_indices": None, "use_bdlora": None, "use_dora": False,
    "use_qalora": False, "use_rslora": False, "velora_config": None,
}
# Config features that change the computation in ways our pytrees cannot express.
_UNSUPPORTED = (
    "use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform",
    "layer_replication", "modules_to_save", "lora_bias", "fan_in_fan_out", "target_parameters",
    "trainable_token_indices", "use_qalora", "alora_invocation_tokens", "exclude_modules",
)
