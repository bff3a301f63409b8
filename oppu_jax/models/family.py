"""Model families: what the loader needs to know of each architecture, in one record.

A new family is one model file: the module, its config (with `conventions`: decoder_only.py or
encoder_decoder.py), `weight_table`, the config readers, and a `register(Family(...))` line at
its bottom. This registry imports no model; `load.py` imports the model files it knows (a new
file outside the package registers itself when imported). The loader, the PEFT export and the
sharding rules then work from the family's weight table.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from oppu_jax.errors import ModelError
from oppu_jax.models.weights import Weight, WeightTable


def _as_stored(weight: Weight, w: np.ndarray, config: Any) -> np.ndarray:
  del weight, config
  return w


@dataclasses.dataclass(frozen=True)
class Family:
  """name: ours; model: the nnx module class, `model(config, rngs=...)`; config_class: its config
  dataclass (with `param_dtype` and `backend` fields); hf_model_types / gguf_architectures: the
  config.json `model_type`s and GGUF `general.architecture`s it reads;
  config_from_hf(hf_dict, source, tensor_names) / config_from_gguf(meta, tensor_shapes, source)
  -> config (tensor_names: the checkpoint's, for choices the config.json does not record);
  weight_table(config); gguf_tensor(weight, array, config) undoes llama.cpp layouts."""

  name: str
  model: type
  config_class: type
  hf_model_types: tuple[str, ...]
  gguf_architectures: tuple[str, ...]
  config_from_hf: Callable[[dict, str], Any]
  config_from_gguf: Callable[[dict, dict, str], Any]
  weight_table: Callable[[Any], WeightTable]
  gguf_tensor: Callable[[Weight, np.ndarray, Any], np.ndarray] = _as_stored


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
  FAMILIES[family.name] = family
  return family


def for_hf(hf: dict, source: str) -> Family:
  """The family that reads this config.json; a one-line ModelError naming `source` if none."""
  model_type = hf.get("model_type")
  return _find("hf_model_types", model_type, lambda known: (
      f"{source}: unsupported architecture {hf.get('architectures') or model_type!r} "
      f"(model_type {model_type!r}); oppu_jax loads model_type {known}"))


def for_gguf(arch: str | None, source: str) -> Family:
  return _find("gguf_architectures", arch, lambda known: (
      f"{source}: unsupported GGUF architecture {arch!r}; oppu_jax reads {known}"))


def _find(field: str, name, message) -> Family:
  for family in FAMILIES.values():
    if name in getattr(family, field):
      return family
  raise ModelError(message(", ".join(sorted(n for f in FAMILIES.values()
                                            for n in getattr(f, field)))))


def for_config(config: Any) -> Family:
  """The family whose config class `config` is (an exact match: families do not subclass)."""
  for family in FAMILIES.values():
    if type(config) is family.config_class:
      return family
  raise TypeError(f"no model family for {type(config).__name__}")
