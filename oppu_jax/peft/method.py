"""The PEFT method interface and the registry that picks a method by its config name.

A method is a frozen, hashable dataclass (static under jit) that says how one user's adapter
pytree is made, how it changes a projection or the input, and how it reads and writes the HF
PEFT format. The trainer, scorer, decoder and exporter call only this interface, so a new method
is one file: a class implementing `PeftMethod`, decorated with `@register`.

An adapter is a dict pytree; its "layers" entry, if any, has leaves with a leading [layers] axis:
the model's layer scan slices it and hands each layer's slice to `project` as `adapter_layer`.
Methods read shapes and HF module names from the model's weight table (`models/weights.py`):
`table.projections[name].shape` ([d_in, d_out]), `.num_layers`, `.hf_module(i)`, and
`table.at("embed").shape` ([vocab, hidden]).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import jax
import numpy as np

from oppu_jax.errors import AdapterFormatError, ConfigError
from oppu_jax.models.weights import WeightTable

# matmul(x [..., d_in], w [d_in, d_out]) -> f32 [..., d_out]: the model's own (dtype and backend
# policy bound), so an adapter's extra products follow the same policy as the base's.
Matmul = Callable[[jax.Array, jax.Array], jax.Array]


@runtime_checkable
class PeftMethod(Protocol):
  """One PEFT method's hyper-parameters and behaviour; its adapters are plain pytrees."""

  name: ClassVar[str]  # the config name (`config.peft.method`), e.g. "lora"
  peft_type: ClassVar[str]  # HF PEFT's `peft_type`, e.g. "LORA"

  def init(self, table: WeightTable, key: jax.Array, embed: jax.Array | None = None) -> Any:
    """A fresh adapter for one user; `embed` [vocab, hidden] is the base input embedding."""

  def project(self, name: str, x: jax.Array, w: jax.Array, adapter_layer: Any,
              rng: jax.Array | None, matmul: Matmul) -> jax.Array:
    """Projection `name` of one layer: x [..., d_in] @ w [d_in, d_out] as adapted, f32.
    `adapter_layer` is this layer's slice of the adapter's "layers" subtree."""

  def prefix(self, adapter: Any) -> jax.Array | None:
    """Virtual input embeddings [n, hidden] to prepend, or None."""

  def to_hf(self, adapter: Any, table: WeightTable,
            model_config: Any = None) -> tuple[dict, dict[str, np.ndarray]]:
    """-> (this method's adapter_config.json fields, {HF tensor name: f32 array})."""

  @classmethod
  def from_hf(cls, hf_config: dict, tensors: dict[str, np.ndarray], table: WeightTable,
              model_config: Any, where: Any) -> tuple["PeftMethod", Any]:
    """Reads an HF PEFT adapter -> (method, adapter); `where` (hf_format.HfFiles) names the
    files for AdapterFormatError messages."""

  @classmethod
  def from_config(cls, peft_config: Any, context: "BuildContext") -> "PeftMethod":
    """The method a config section (`config.peft`) asks for; bad values -> ConfigError."""


# Optional, for methods that fold into the base weights (LoRA):
#   can_merge = True
#   merge(layer_weights: {projection: [layers, d_in, d_out]}, adapter) -> the changed entries


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What `from_config` may need besides the config section.

  key: the config section's name, for error messages; encode: text -> token ids; instruction:
  the task instruction (prompt tuning starts from its embeddings)."""

  table: WeightTable
  encode: Callable[[str], list[int]] | None = None
  instruction: str = ""
  key: str = "config.peft"


_BY_NAME: dict[str, type] = {}
_BY_PEFT_TYPE: dict[str, type] = {}


def register(cls: type) -> type:
  """Class decorator: makes `cls` available by its `name` and its `peft_type`."""
  entries = ((_BY_NAME, cls.name), (_BY_PEFT_TYPE, cls.peft_type))
  for table, key in entries:
    old = table.get(key)
    # The same class defined again (a re-imported module) replaces itself; another class may not.
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__,
                                                                  cls.__qualname__):
      raise ValueError(f"PEFT method {key!r} is already registered by {old.__qualname__}")
  for table, key in entries:
    table[key] = cls
  return cls


def get(name: str) -> type:
  """The method class registered as `name` (the value of `config.peft.method`)."""
  cls = _BY_NAME.get(name)
  if cls is None:
    raise ConfigError(f"config.peft.method: unknown {name!r}; choose from "
                      f"{', '.join(sorted(_BY_NAME))}")
  return cls


def by_peft_type(peft_type: Any, path: str = "adapter_config.json") -> type:
  """The method class that reads HF PEFT's `peft_type`; unknown -> AdapterFormatError at `path`."""
  cls = _BY_PEFT_TYPE.get(peft_type) if isinstance(peft_type, str) else None
  if cls is None:
    raise AdapterFormatError(f"{path}: unsupported peft_type {peft_type!r}; oppu_jax reads "
                             f"{sorted(_BY_PEFT_TYPE)}")
  return cls


def names() -> tuple[str, ...]:
  return tuple(sorted(_BY_NAME))


def build(peft_config: Any, *, table: WeightTable, encode: Callable[[str], list[int]] | None = None,
          instruction: str = "", key: str = "config.peft") -> PeftMethod:
  """The method `peft_config.method` names, with its hyper-parameters from `peft_config`."""
  return get(peft_config.method).from_config(
      peft_config, BuildContext(table=table, encode=encode, instruction=instruction, key=key))
