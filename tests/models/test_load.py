"""Loaders: HF safetensors directories (sharded too), GGUF, and their one-line errors."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from oppu_jax.models import llama, load

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _save_tiny_hf(tmp_path, max_shard_size=None):
  hf_cfg = transformers.LlamaConfig(
      vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
  )
  torch.manual_seed(1)
  hf = transformers.LlamaForCausalLM(hf_cfg).eval()
  kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
  hf.save_pretrained(tmp_path, safe_serialization=True, **kw)
  return hf


@pytest.mark.torch
@pytest.mark.parametrize("sharded", [False, True])
def test_hf_directory_loads_and_matches(tmp_path, sharded):
  hf = _save_tiny_hf(tmp_path, "40KB" if sharded else None)
  assert os.path.exists(tmp_path / "model.safetensors.index.json") == sharded
  model, cfg = load.load_model(str(tmp_path))
  assert cfg.num_kv_heads == 2 and not cfg.tie_embeddings
  tokens = np.array([[3, 9, 27, 81, 4]])
  pos = np.arange(5)[None]
  got, _ = model(jnp.asarray(tokens), positions=jnp.asarray(pos),
                 attention_mask=jnp.ones((1, 5), bool))
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-4)


def test_bf16_parameters(tmp_path):
  _save_tiny_hf(tmp_path)
  model, cfg = load.load_model(str(tmp_path), param_dtype="bfloat16")
  assert model.layers.q[...].dtype == jnp.bfloat16 and cfg.param_dtype == "bfloat16"


def test_missing_path_is_one_clear_line(tmp_path):
  with pytest.raises(load.ModelError, match="does not exist") as e:
    load.load_model(str(tmp_path / "nope"))
  assert "\n" not in str(e.value)


def test_unsupported_architecture(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba",
                                                    "architectures": ["MambaForCausalLM"]}))
  with pytest.raises(load.ModelError, match="unsupported architecture") as e:
    load.load_model(str(tmp_path))
  assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_corrupted_gguf(tmp_path):
  bad = tmp_path / "broken.gguf"
  with open(load.embedded_gguf_path(), "rb") as f:
    bad.write_bytes(f.read(4096))  # a truncated copy: header ok, tensors gone
  with pytest.raises(load.ModelError) as e:
    load.load_model(str(bad))
  assert "broken.gguf" in str(e.value) and "\n" not in str(e.value)
  garbage = tmp_path / "garbage.gguf"
  garbage.write_bytes(b"not a gguf at all" * 10)
  with pytest.raises(load.ModelError, match="garbage.gguf"):
    load.load_model(str(garbage))


def test_missing_tensor_names_it(tmp_path):
  cfg = llama.tiny_config()
  with pytest.raises(load.ModelError, match="model.embed_tokens.weight"):
    load.from_hf_state_dict(cfg, {})
