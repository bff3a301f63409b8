"""Per-user adapter files in the Hugging Face PEFT format: how a user takes their adapter away.

A directory with `adapter_config.json` + `adapter_model.safetensors`, named and shaped as HF PEFT
0.21's `save_pretrained` writes them for a `CAUSAL_LM` model, so `PeftModel.from_pretrained` loads
ours and `load_adapter` reads PEFT's. Each method writes and reads its own fields and tensors
(`to_hf` / `from_hf`, found by `peft_type` in the registry); this file holds what they share:
the two files, written atomically, PEFT's common config fields, `target_modules` against the
weight table, and tensor checks. Tensors are named after the table's HF modules
("base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight").
No torch on purpose (safetensors.numpy / .flax), so exporting needs no PyTorch install; adapters are
written in float32 and read back as float32 whatever dtype they were saved in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors.flax import load_file
from safetensors.numpy import save_file

from oppu_jax.errors import AdapterFormatError
from oppu_jax.models.weights import WeightTable
from oppu_jax.peft import method as method_lib

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# The PEFT release whose file layout this mirrors; PEFT stamps its own version the same way.
PEFT_VERSION = "0.21.2"
# Fields PEFT 0.21.2 writes for every adapter type (task_type: see `task_type`); methods add theirs.
COMMON_DEFAULTS = {
    "auto_mapping": None, "inference_mode": True, "modules_to_save": None,
    "peft_version": PEFT_VERSION, "revision": None, "task_type": "CAUSAL_LM",
}
_PREFIX = "base_model.model."

__all__ = ["AdapterFormatError", "save_adapter", "load_adapter"]


class HfFiles(NamedTuple):
  """The two files of one adapter directory, for error messages."""

  config: str
  weights: str


def save_adapter(
    directory: str,
    method,
    adapter: Any,
    table: WeightTable,
    *,
    model_config=None,
    base_model_name_or_path: str = "",
) -> None:
  """Writes `adapter` (one user's pytree for `method`) as an HF PEFT adapter directory.

  The write is atomic per file: both files go to a temp dir beside `directory` first; a new
  directory is renamed into place whole, an existing one gets each file os.replace'd (other files
  in it are left alone). `model_config` fills fields some methods record (prompt tuning's
  num_layers / num_attention_heads).
  """
  fields, tensors = method.to_hf(adapter, table, model_config)
  # PEFT writes null, not "", when the base model has no name.
  config = {**COMMON_DEFAULTS, "peft_type": method.peft_type, "task_type": task_type(model_config),
            "base_model_name_or_path": base_model_name_or_path or None, **fields}
  _write_atomically(directory, config, tensors)


def load_adapter(directory: str, table: WeightTable, model_config=None):
  """Reads an adapter saved by HF PEFT or by `save_adapter` -> (method, adapter pytree)."""
  where = HfFiles(os.path.join(directory, CONFIG_NAME), os.path.join(directory, WEIGHTS_NAME))
  for path in where:
    if not os.path.exists(path):
      raise AdapterFormatError(f"{path}: missing; an HF PEFT adapter needs {CONFIG_NAME} and "
                               f"{WEIGHTS_NAME}")
  try:
    with open(where.config) as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise AdapterFormatError(f"{where.config}: not readable JSON ({e})") from None
  if not isinstance(config, dict):
    raise AdapterFormatError(f"{where.config}: not a JSON object")
  cls = method_lib.by_peft_type(config.get("peft_type"), where.config)
  try:
    # Through JAX, not numpy: numpy has no bfloat16, and adapters trained in bf16 are saved so.
    tensors = {k: np.asarray(v, np.float32) for k, v in load_file(where.weights).items()}
  except (OSError, SafetensorError) as e:
    raise AdapterFormatError(f"{where.weights}: not a readable safetensors file ({e})") from None
  return cls.from_hf(config, tensors, table, model_config, where)


# ----------------------------------------------------------------------------------------------
# Shared by the methods' to_hf / from_hf


def tensor_name(table: WeightTable, layer: int, target: str, leaf: str) -> str:
  """HF PEFT's name of an adapter tensor: the module's name in the base model, then `leaf`."""
  return f"{_PREFIX}{table.projections[target].hf_module(layer)}.{leaf}"


def task_type(model_config) -> str:
  """PEFT's task type, as the model's family names it (CAUSAL_LM without a model config)."""
  return "CAUSAL_LM" if model_config is None else model_config.conventions.peft_task_type


def hf_targets(table: WeightTable, targets) -> list[str] | str:
  """PEFT's target_modules for our projections: short HF module names ("q_proj") in model order
  (PEFT writes a set, so its order is arbitrary anyway) when every module of each such name is a
  target; else one regex of the full module names. (T5's "q" names the encoder's, the decoder's
  and the cross-attention's query: adapting only the encoder's needs the regex.)"""
  targets = set(targets)
  by_short: dict[str, list[str]] = {}
  for p, w in table.projections.items():
    by_short.setdefault(_short(w), []).append(p)
  if all(set(ps) <= targets or not set(ps) & targets for ps in by_short.values()):
    return [short for short, ps in by_short.items() if set(ps) <= targets]
  modules = [re.escape(w.hf.removesuffix(".weight")).replace(re.escape("{i}"), r"\d+")
             for p, w in table.projections.items() if p in targets]
  return "(" + "|".join(modules) + ")"


def parse_targets(spec, table: WeightTable, config_path: str) -> tuple[str, ...]:
  """PEFT's target_modules (a list of name suffixes, a regex, or "all-linear") -> our names."""
  projections = table.projections
  if spec == "all-linear":
    return tuple(projections)
  if spec == []:
    return ()
  num_layers = {p: w.num_layers for p, w in projections.items()}
  if isinstance(spec, str):
    matched = {p: sum(bool(re.fullmatch(spec, w.hf_module(i))) for i in range(num_layers[p]))
               for p, w in projections.items()}
  elif isinstance(spec, list):
    unknown = [s for s in spec
               if not any(_suffix_match(s, w.hf_module(0)) for w in projections.values())]
    if unknown:
      raise AdapterFormatError(f"{config_path}: unknown target module(s) {unknown}; oppu_jax "
                               f"adapts {hf_targets(table, projections)}")
    matched = {p: sum(any(_suffix_match(s, w.hf_module(i)) for s in spec)
                      for i in range(num_layers[p])) for p, w in projections.items()}
  else:
    raise AdapterFormatError(f"{config_path}: target modules {spec!r} are not a list or a regex")
  partial = [p for p, n in matched.items() if 0 < n < num_layers[p]]
  if partial:
    raise AdapterFormatError(f"{config_path}: target modules {spec!r} adapt only some layers of "
                             f"{hf_targets(table, partial)}; oppu_jax adapts all layers")
  targets = tuple(p for p, n in matched.items() if n)
  if not targets:
    raise AdapterFormatError(f"{config_path}: target modules {spec!r} match none of "
                             f"{hf_targets(table, projections)}")
  return targets


def reject_features(config: dict, config_path: str, keys) -> None:
  """Config features that change the computation in ways our pytrees cannot express."""
  used = [k for k in keys if config.get(k)]
  if used:
    raise AdapterFormatError(f"{config_path}: uses {used} = {[config[k] for k in used]}, which "
                             "oppu_jax does not support")


def number(config: dict, key: str, kind, config_path: str, default=None):
  """config[key] as `kind` (int / float); missing or not a number -> AdapterFormatError."""
  value = config.get(key, default)
  if value is None:
    raise AdapterFormatError(f"{config_path}: missing key {key!r}")
  try:
    return kind(value)
  except (TypeError, ValueError):
    raise AdapterFormatError(f"{config_path}: {key} {value!r} is not a number") from None


def check_tensors(tensors: dict, want: dict, weights_path: str) -> None:
  """The file holds exactly the tensors `want` names ({name: shape}), with those shapes."""
  missing = [k for k in want if k not in tensors]
  if missing:
    raise AdapterFormatError(f"{weights_path}: missing tensor {missing[0]!r} ({len(missing)} "
                             "missing in all)")
  extra = [k for k in tensors if k not in want]
  if extra:
    raise AdapterFormatError(f"{weights_path}: unexpected tensor {extra[0]!r} ({len(extra)} in "
                             "all) for this adapter config")
  for k, shape in want.items():
    if tuple(tensors[k].shape) != tuple(shape):
      raise AdapterFormatError(f"{weights_path}: {k} has shape {list(tensors[k].shape)}, "
                               f"expected {list(shape)}")


def stack_layers(per_layer: list) -> jnp.ndarray:
  """Per-layer arrays -> one f32 stack [layers, ...], as adapters hold them."""
  return jnp.asarray(np.stack(per_layer), jnp.float32)


def _short(weight) -> str:
  return weight.hf_module(0).split(".")[-1]


def _suffix_match(target: str, module: str) -> bool:
  # PEFT's rule for a list entry: the whole module name, or its tail after a dot.
  return module == target or module.endswith("." + target)


def _write_atomically(directory: str, config: dict, tensors: dict) -> None:
  directory = os.path.abspath(directory)
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  # os.mkdir, not mkdtemp: mkdtemp's 0700 mode would stick to the renamed directory.
  tmp = os.path.join(parent, f".{os.path.basename(directory)}.tmp-{uuid.uuid4().hex}")
  os.mkdir(tmp)
  try:
    # PEFT saves with the {"format": "pt"} header that transformers' loaders look for.
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(tmp, WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(tmp, CONFIG_NAME), "w") as f:
      f.write(json.dumps(config, indent=2, sort_keys=True))
    if not os.path.exists(directory):
      os.rename(tmp, directory)
      return
    # Weights first, config last: the config is what marks the directory as this adapter.
    for name in (WEIGHTS_NAME, CONFIG_NAME):
      os.replace(os.path.join(tmp, name), os.path.join(directory, name))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
