"""Models by their published shapes, without weights: a known name or a `config.json` path ->
an abstract model (`nnx.eval_shape`: every weight a jax.ShapeDtypeStruct).

The family's own config reader turns the config.json into our config, so a checked model is the
model a run would load from that checkpoint; only the weights are missing.
"""

from __future__ import annotations

import json
import os

from flax import nnx

from oppu_jax.errors import ModelError
from oppu_jax.models import family as families
from oppu_jax.models import load  # noqa: F401 (registers the families)

# The published config.json fields that matter for shapes (the checkpoints' own values).
KNOWN = {
    "llama-2-7b": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
                   "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32,
                   "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2},
    "llama-2-13b": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 5120,
                    "intermediate_size": 13824, "num_hidden_layers": 40,
                    "num_attention_heads": 40, "num_key_value_heads": 40,
                    "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2},
    "smollm2-135m": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                     "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "rope_theta": 100000.0,
                     "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 1,
                     "eos_token_id": 2},
    # FlanT5 checkpoints store their own lm_head (untied): `tensors` says so.
    "flan-t5-xxl": {"model_type": "t5", "vocab_size": 32128, "d_model": 4096, "d_kv": 64,
                    "d_ff": 10240, "num_layers": 24, "num_decoder_layers": 24, "num_heads": 64,
                    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
                    "tensors": ["lm_head.weight"]},
    "flan-t5-base": {"model_type": "t5", "vocab_size": 32128, "d_model": 768, "d_kv": 64,
                     "d_ff": 2048, "num_layers": 12, "num_decoder_layers": 12, "num_heads": 12,
                     "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
                     "tensors": ["lm_head.weight"]},
    # Tests: a few hundred thousand parameters, heads divisible by small model axes.
    "tiny-llama": {"model_type": "llama", "vocab_size": 256, "hidden_size": 64,
                   "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2},
    "tiny-t5": {"model_type": "t5", "vocab_size": 256, "d_model": 64, "d_kv": 16, "d_ff": 128,
                "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
                "feed_forward_proj": "gated-gelu"},
}


def hf_config(name_or_path: str) -> tuple[dict, str]:
  """(config.json dict, its source) for a known name, a config.json file or a checkpoint
  directory holding one; a ModelError naming the argument otherwise."""
  if name_or_path in KNOWN:
    return dict(KNOWN[name_or_path]), f"known model {name_or_path!r}"
  path = name_or_path
  if os.path.isdir(path):
    path = os.path.join(path, "config.json")
  if not os.path.isfile(path):
    raise ModelError(f"--model={name_or_path!r}: neither a known model ({', '.join(KNOWN)}) nor "
                     "a config.json file or a directory holding one")
  try:
    with open(path) as f:
      return json.load(f), path
  except (OSError, ValueError) as e:
    raise ModelError(f"{path}: not a readable JSON config ({e})") from None


def abstract_model(name_or_path: str, *, param_dtype: str = "bfloat16",
                   compute_dtype: str = "bfloat16", backend: str = "xla"):
  """The model of that config with abstract weights; backend "xla" (the accelerators' policy)."""
  hf, source = hf_config(name_or_path)
  family = families.for_hf(hf, source)
  tensors = hf.pop("tensors", None)
  if tensors is None and os.path.isdir(name_or_path):
    tensors = _tensor_names(name_or_path)
  config = family.config_from_hf(hf, source, tensors).replace(
      param_dtype=param_dtype, compute_dtype=compute_dtype, backend=backend)
  return nnx.eval_shape(lambda: family.model(config, rngs=nnx.Rngs(0)))


def _tensor_names(directory: str) -> list[str] | None:
  """The checkpoint's tensor names from its safetensors index, if it has one (a family reads
  choices the config.json does not record from them, e.g. FlanT5's own lm_head)."""
  index = os.path.join(directory, "model.safetensors.index.json")
  if not os.path.exists(index):
    return None
  with open(index) as f:
    return list(json.load(f).get("weight_map", {}))
