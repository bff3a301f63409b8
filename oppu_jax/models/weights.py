"""A model family's weight table: the one place that says, for every weight, its name in Hugging
Face checkpoints and in GGUF files, its shape and logical axes in our layout, and whether
adapters may target it. The loader, the HF PEFT export and the sharding rules all read it.

A model family supplies `weight_table(config) -> WeightTable` next to its model (see
`models/llama.py`); nothing else in the tree lists weight names.
"""

from __future__ import annotations

import dataclasses

from oppu_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Weight:
  """One weight; a per-layer weight is stored stacked with a leading [layers] axis.

  path: where it sits in the model state, e.g. ("layers", "q") or ("embed",).
  hf, gguf: tensor names; "{i}" stands for the layer index (gguf None: not in GGUF files).
  shape: our layout of one layer's tensor, [d_in, d_out] for a projection.
  axes: logical axis names of `shape` (sharding rules map them to mesh axes); the stack adds
    "layers" in front.
  hf_transposed: HF stores the transpose ([d_out, d_in], torch's Linear layout).
  projection: the name adapters use for it ("q"), or None if adapters may not target it.
  num_layers: the stack depth, 0 for a top-level weight.
  """

  path: tuple[str, ...]
  hf: str
  gguf: str | None
  shape: tuple[int, ...]
  axes: tuple[str, ...]
  hf_transposed: bool = False
  projection: str | None = None
  num_layers: int = 0

  @property
  def stacked(self) -> bool:
    return self.num_layers > 0

  @property
  def full_shape(self) -> tuple[int, ...]:
    return ((self.num_layers,) if self.stacked else ()) + self.shape

  @property
  def full_axes(self) -> tuple[str, ...]:
    return (("layers",) if self.stacked else ()) + self.axes

  def hf_name(self, layer: int | None = None) -> str:
    return self.hf.format(i=layer)

  def gguf_name(self, layer: int | None = None) -> str | None:
    return None if self.gguf is None else self.gguf.format(i=layer)

  def hf_module(self, layer: int) -> str:
    """The HF module that holds this weight in `layer` ("model.layers.3.self_attn.q_proj"), as
    HF PEFT names its adapter tensors."""
    return self.hf_name(layer).removesuffix(".weight")


@dataclasses.dataclass(frozen=True)
class WeightTable:
  weights: tuple[Weight, ...]

  @property
  def projections(self) -> dict[str, Weight]:
    """Adaptable weights by projection name, in model order."""
    return {w.projection: w for w in self.weights if w.projection is not None}

  def projection(self, name: str, key: str = "peft.targets") -> Weight:
    """The adaptable weight called `name`; a ConfigError naming `key` if there is none."""
    found = self.projections.get(name)
    if found is None:
      raise ConfigError(f"{key}: unknown projection {name!r}; choose from "
                        f"{', '.join(self.projections)}")
    return found

  def check_projections(self, names, key: str = "peft.targets") -> tuple[str, ...]:
    """Validates adapter target names; returns them as a tuple in model order (the order HF
    PEFT files are read back in), with aliases expanded: a name that is not a projection but the
    part after "." of some ("q" in T5) stands for all of them ("enc.q", "dec.q", "cross.q"), as
    HF PEFT's target_modules do."""
    chosen = set()
    for name in names:
      found = ({name} if name in self.projections else
               {p for p in self.projections if "." in p and p.rpartition(".")[2] == name})
      if not found:
        raise ConfigError(f"{key}: unknown projection {name!r}; choose from "
                          f"{', '.join(self.projections)}")
      chosen |= found
    return tuple(p for p in self.projections if p in chosen)

  def at(self, *path: str) -> Weight:
    for w in self.weights:
      if w.path == path:
        return w
    raise KeyError(path)
