"""Per-user adapter files in the Hugging Face PEFT format: how a user takes their adapter away.

A directory with `adapter_config.json` + `adapter_model.safetensors`, named and shaped as HF PEFT
0.21's `save_pretrained` writes them for a Llama `CAUSAL_LM` model, so `PeftModel.from_pretrained`
loads ours and `load_adapter` reads PEFT's. Tensors per layer i (HF stores [out, in]):
  LoRA   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, d_in]
         ...q_proj.lora_B.weight [d_out, r]
  (IA)³  ...self_attn.k_proj.ia3_l [d_out, 1]; feed-forward ...mlp.down_proj.ia3_l [1, d_in]
  prompt prompt_embeddings [n_virtual, hidden]
No torch on purpose (safetensors.numpy / .flax), so exporting needs no PyTorch install; adapters are
written in float32 and read back as float32 whatever dtype they were saved in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid

import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors.flax import load_file
from safetensors.numpy import save_file

from oppu_jax.models.llama import PROJECTIONS, LlamaConfig, layer_shapes
from oppu_jax.models.load import HF_LAYER_NAMES
from oppu_jax.peft.ia3 import IA3
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.prompt_tuning import PromptTuning

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# The PEFT release whose file layout this mirrors; PEFT stamps its own version the same way.
PEFT_VERSION = "0.21.2"

# Our projection -> HF module path inside a decoder layer ("self_attn.q_proj").
HF_MODULES = {p: HF_LAYER_NAMES[p].removesuffix(".weight") for p in PROJECTIONS}
_PREFIX = "base_model.model."


class AdapterFormatError(ValueError):
  """An adapter directory that cannot be read; the message is one line and names the file."""


def save_adapter(
    directory: str,
    peft,
    adapter: dict,
    *,
    base_model_name_or_path: str = "",
    model_config: LlamaConfig | None = None,
) -> None:
  """Writes `adapter` (our pytree for method `peft`) as an HF PEFT adapter directory.

  The write is atomic per file: both files go to a temp dir beside `directory` first; a new
  directory is renamed into place whole, an existing one gets each file os.replace'd (other files
  in it are left alone). `model_config` fills num_layers / num_attention_heads for prompt tuning.
  """
  # PEFT writes null, not "", when the base model has no name.
  base = base_model_name_or_path or None
  if isinstance(peft, Lora):
    config, tensors = _lora_to_hf(peft, adapter, base)
  elif isinstance(peft, IA3):
    config, tensors = _ia3_to_hf(peft, adapter, base)
  elif isinstance(peft, PromptTuning):
    config, tensors = _prompt_to_hf(peft, adapter, base, model_config)
  else:
    raise ValueError(f"save_adapter: no HF PEFT format for method {type(peft).__name__}")
  _write_atomically(directory, config, tensors)


def load_adapter(directory: str, model_config: LlamaConfig):
  """Reads an adapter saved by HF PEFT or by `save_adapter` -> (peft method, adapter pytree)."""
  config_path = os.path.join(directory, CONFIG_NAME)
  weights_path = os.path.join(directory, WEIGHTS_NAME)
  for path in (config_path, weights_path):
    if not os.path.exists(path):
      raise AdapterFormatError(f"{path}: missing; an HF PEFT adapter needs {CONFIG_NAME} and "
                               f"{WEIGHTS_NAME}")
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise AdapterFormatError(f"{config_path}: not readable JSON ({e})") from None
  if not isinstance(config, dict):
    raise AdapterFormatError(f"{config_path}: not a JSON object")
  try:
    # Through JAX, not numpy: numpy has no bfloat16, and adapters trained in bf16 are saved so.
    tensors = {k: np.asarray(v, np.float32) for k, v in load_file(weights_path).items()}
  except (OSError, SafetensorError) as e:
    raise AdapterFormatError(f"{weights_path}: not a readable safetensors file ({e})") from None
  peft_type = config.get("peft_type")
  readers = {"LORA": _lora_from_hf, "IA3": _ia3_from_hf, "PROMPT_TUNING": _prompt_from_hf}
  if peft_type not in readers:
    raise AdapterFormatError(f"{config_path}: unsupported peft_type {peft_type!r}; oppu_jax reads "
                             f"{sorted(readers)}")
  return readers[peft_type](config, tensors, model_config, config_path, weights_path)


# ----------------------------------------------------------------------------------------------
# LoRA


def _lora_to_hf(lora: Lora, adapter: dict, base) -> tuple[dict, dict]:
  alpha = int(lora.alpha) if float(lora.alpha).is_integer() else float(lora.alpha)
  config = {
      **_LORA_DEFAULTS, "base_model_name_or_path": base, "r": lora.rank, "lora_alpha": alpha,
      "lora_dropout": float(lora.dropout), "target_modules": _hf_targets(lora.targets),
  }
  tensors = {}
  for target in lora.targets:
    a = np.asarray(adapter["layers"][target]["a"], np.float32)  # [L, d_in, r]
    b = np.asarray(adapter["layers"][target]["b"], np.float32)  # [L, r, d_out]
    for i in range(a.shape[0]):
      tensors[_key(i, target, "lora_A.weight")] = a[i].T
      tensors[_key(i, target, "lora_B.weight")] = b[i].T
  return config, tensors


def _lora_from_hf(config, tensors, model_config, config_path, weights_path):
  _reject_features(config, config_path, _LORA_UNSUPPORTED)
  if config.get("bias", "none") != "none":
    raise AdapterFormatError(f"{config_path}: bias {config['bias']!r} is not supported (only "
                             "'none')")
  targets = _our_targets(config.get("target_modules"), model_config, config_path)
  try:
    lora = Lora(targets=targets, rank=int(config["r"]), alpha=float(config["lora_alpha"]),
                dropout=float(config.get("lora_dropout") or 0.0))
  except KeyError as e:
    raise AdapterFormatError(f"{config_path}: missing key {e.args[0]!r}") from None
  except (TypeError, ValueError):
    raise AdapterFormatError(f"{config_path}: r {config['r']!r} / lora_alpha "
                             f"{config['lora_alpha']!r} are not numbers") from None
  shapes = layer_shapes(model_config)
  want = {}
  for target in targets:
    d_in, d_out = shapes[target]
    for i in range(model_config.num_layers):
      want[_key(i, target, "lora_A.weight")] = (lora.rank, d_in)
      want[_key(i, target, "lora_B.weight")] = (d_out, lora.rank)
  _check_tensors(tensors, want, weights_path)
  layers = {}
  for target in targets:
    a = [tensors[_key(i, target, "lora_A.weight")].T for i in range(model_config.num_layers)]
    b = [tensors[_key(i, target, "lora_B.weight")].T for i in range(model_config.num_layers)]
    layers[target] = {"a": _stack(a), "b": _stack(b)}
  return lora, {"layers": layers}


# ----------------------------------------------------------------------------------------------
# (IA)³


def _ia3_to_hf(ia3: IA3, adapter: dict, base) -> tuple[dict, dict]:
  feedforward = [t for t in ia3.feedforward if t in ia3.targets]
  config = {
      **_IA3_DEFAULTS, "base_model_name_or_path": base,
      "target_modules": _hf_targets(ia3.targets),
      "feedforward_modules": _hf_targets(feedforward),
  }
  tensors = {}
  for target in ia3.targets:
    vec = np.asarray(adapter["layers"][target], np.float32)  # [L, d_in or d_out]
    for i in range(vec.shape[0]):
      # PEFT scales the input [1, d_in] of a feed-forward module, the output [d_out, 1] otherwise.
      v = vec[i][None, :] if target in feedforward else vec[i][:, None]
      tensors[_key(i, target, "ia3_l")] = v
  return config, tensors


def _ia3_from_hf(config, tensors, model_config, config_path, weights_path):
  _reject_features(config, config_path, _IA3_UNSUPPORTED)
  targets = _our_targets(config.get("target_modules"), model_config, config_path)
  feedforward = _our_targets(config.get("feedforward_modules") or [], model_config, config_path)
  ia3 = IA3(targets=targets, feedforward=tuple(t for t in feedforward if t in targets))
  shapes = layer_shapes(model_config)
  want = {}
  for target in targets:
    d_in, d_out = shapes[target]
    shape = (1, d_in) if target in ia3.feedforward else (d_out, 1)
    for i in range(model_config.num_layers):
      want[_key(i, target, "ia3_l")] = shape
  _check_tensors(tensors, want, weights_path)
  layers = {t: _stack([tensors[_key(i, t, "ia3_l")].reshape(-1)
                       for i in range(model_config.num_layers)]) for t in targets}
  return ia3, {"layers": layers}


# ----------------------------------------------------------------------------------------------
# Prompt tuning


def _prompt_to_hf(pt: PromptTuning, adapter: dict, base, model_config) -> tuple[dict, dict]:
  prompt = np.asarray(adapter["prompt"], np.float32)  # [n, hidden]
  config = {
      **_PROMPT_DEFAULTS, "base_model_name_or_path": base,
      "num_virtual_tokens": int(prompt.shape[0]), "token_dim": int(prompt.shape[1]),
      # Unknown without the model config; PEFT fills nulls from the base model when it loads.
      "num_attention_heads": model_config.num_heads if model_config else None,
      "num_layers": model_config.num_layers if model_config else None,
  }
  del pt  # the init ids do not matter once the prompt is trained; PEFT writes RANDOM
  return config, {"prompt_embeddings": prompt}


def _prompt_from_hf(config, tensors, model_config, config_path, weights_path):
  _reject_features(config, config_path, ("modules_to_save",))
  submodules = config.get("num_transformer_submodules") or 1
  if submodules != 1:
    raise AdapterFormatError(f"{config_path}: num_transformer_submodules {submodules} is not "
                             "supported (decoder-only models use 1)")
  token_dim = config.get("token_dim") or model_config.hidden_size
  if token_dim != model_config.hidden_size:
    raise AdapterFormatError(f"{config_path}: token_dim {token_dim} != the model's hidden size "
                             f"{model_config.hidden_size}")
  try:
    n = int(config["num_virtual_tokens"])
  except KeyError as e:
    raise AdapterFormatError(f"{config_path}: missing key {e.args[0]!r}") from None
  except (TypeError, ValueError):
    raise AdapterFormatError(f"{config_path}: num_virtual_tokens "
                             f"{config['num_virtual_tokens']!r} is not a number") from None
  _check_tensors(tensors, {"prompt_embeddings": (n, model_config.hidden_size)}, weights_path)
  prompt = jnp.asarray(tensors["prompt_embeddings"], jnp.float32)  # [n, hidden]
  return PromptTuning(num_virtual_tokens=n), {"prompt": prompt}


# ----------------------------------------------------------------------------------------------
# Names, checks, writing


def _key(layer: int, target: str, leaf: str) -> str:
  return f"{_PREFIX}model.layers.{layer}.{HF_MODULES[target]}.{leaf}"


def _hf_targets(targets) -> list[str]:
  """Short HF names in model order (PEFT writes a set, so its order is arbitrary anyway)."""
  return [HF_MODULES[p].split(".")[-1] for p in PROJECTIONS if p in targets]


def _our_targets(spec, model_config: LlamaConfig, config_path: str) -> tuple[str, ...]:
  """PEFT's target_modules (a list of name suffixes, a regex, or "all-linear") -> our names."""
  if spec == "all-linear":
    return PROJECTIONS
  layers = range(model_config.num_layers)

  def module(p, i):
    return f"model.layers.{i}.{HF_MODULES[p]}"

  if spec == []:
    return ()
  if isinstance(spec, str):
    matched = {p: sum(bool(re.fullmatch(spec, module(p, i))) for i in layers) for p in PROJECTIONS}
  elif isinstance(spec, list):
    unknown = [s for s in spec if not any(_suffix_match(s, module(p, 0)) for p in PROJECTIONS)]
    if unknown:
      raise AdapterFormatError(f"{config_path}: unknown target module(s) {unknown}; oppu_jax "
                               f"adapts {_hf_targets(PROJECTIONS)}")
    matched = {p: sum(any(_suffix_match(s, module(p, i)) for s in spec) for i in layers)
               for p in PROJECTIONS}
  else:
    raise AdapterFormatError(f"{config_path}: target modules {spec!r} are not a list or a regex")
  partial = [p for p, n in matched.items() if 0 < n < model_config.num_layers]
  if partial:
    raise AdapterFormatError(f"{config_path}: target modules {spec!r} adapt only some layers of "
                             f"{_hf_targets(partial)}; oppu_jax adapts all layers")
  targets = tuple(p for p, n in matched.items() if n)
  if not targets:
    raise AdapterFormatError(f"{config_path}: target modules {spec!r} match none of "
                             f"{_hf_targets(PROJECTIONS)}")
  return targets


def _suffix_match(target: str, module: str) -> bool:
  # PEFT's rule for a list entry: the whole module name, or its tail after a dot.
  return module == target or module.endswith("." + target)


def _reject_features(config: dict, config_path: str, keys) -> None:
  used = [k for k in keys if config.get(k)]
  if used:
    raise AdapterFormatError(f"{config_path}: uses {used} = {[config[k] for k in used]}, which "
                             "oppu_jax does not support")


def _check_tensors(tensors: dict, want: dict, weights_path: str) -> None:
  missing = [k for k in want if k not in tensors]
  if missing:
    raise AdapterFormatError(f"{weights_path}: missing tensor {missing[0]!r} ({len(missing)} "
                             "missing in all)")
  extra = [k for k in tensors if k not in want]
  if extra:
    raise AdapterFormatError(f"{weights_path}: unexpected tensor {extra[0]!r} ({len(extra)} in "
                             "all) for this adapter config")
  for k, shape in want.items():
    if tuple(tensors[k].shape) != shape:
      raise AdapterFormatError(f"{weights_path}: {k} has shape {list(tensors[k].shape)}, "
                               f"expected {list(shape)}")


def _stack(per_layer: list) -> jnp.ndarray:
  return jnp.asarray(np.stack(per_layer), jnp.float32)


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


# What PEFT 0.21.2 writes besides the fields set above (json keys, for a CAUSAL_LM adapter).
_LORA_DEFAULTS = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None,
    "auto_mapping": None, "bias": "none", "corda_config": None, "ensure_weight_tying": False,
    "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True,
    "init_lora_weights": True, "kasa_config": None, "layer_replication": None,
    "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
    "lora_bias": False, "lora_ga_config": None, "megatron_config": None,
    "megatron_core": "megatron.core", "modules_to_save": None, "monteclora_config": None,
    "peft_type": "LORA", "peft_version": PEFT_VERSION, "qalora_group_size": 16,
    "rank_pattern": {}, "revision": None, "target_parameters": None, "task_type": "CAUSAL_LM",
    "trainable_token_indices": None, "use_bdlora": None, "use_dora": False,
    "use_qalora": False, "use_rslora": False, "velora_config": None,
}
_IA3_DEFAULTS = {
    "auto_mapping": None, "exclude_modules": None, "fan_in_fan_out": False,
    "inference_mode": True, "init_ia3_weights": True, "modules_to_save": None,
    "peft_type": "IA3", "peft_version": PEFT_VERSION, "revision": None, "task_type": "CAUSAL_LM",
}
_PROMPT_DEFAULTS = {
    "auto_mapping": None, "inference_mode": True, "modules_to_save": None,
    "num_transformer_submodules": 1, "peft_type": "PROMPT_TUNING", "peft_version": PEFT_VERSION,
    "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "revision": None,
    "task_type": "CAUSAL_LM", "tokenizer_kwargs": None, "tokenizer_name_or_path": None,
}
# Config features that change the computation in ways our pytrees cannot express.
_LORA_UNSUPPORTED = (
    "use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform",
    "layer_replication", "modules_to_save", "lora_bias", "fan_in_fan_out", "target_parameters",
    "trainable_token_indices", "use_qalora", "alora_invocation_tokens", "exclude_modules",
)
_IA3_UNSUPPORTED = ("fan_in_fan_out", "modules_to_save", "exclude_modules")
