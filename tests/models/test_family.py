"""The family registry and the model interface: Llama through both loaders, unknown families."""

import json

import numpy as np
import pytest

from oppu_jax.errors import ModelError
from oppu_jax.models import family, llama, load
from oppu_jax.models.interface import LanguageModel

torch = pytest.importorskip("torch")
from tiny_hf import tiny_hf_pair  # noqa: E402 (needs torch)


def test_llama_satisfies_the_interface():
  _, model, _ = tiny_hf_pair()
  assert isinstance(model, LanguageModel)
  assert not isinstance(object(), LanguageModel)
  assert family.for_config(model.config).model is llama.Llama
  assert model.weight_table() == llama.weight_table(model.config)


def _same_weights(a, b):
  for w in llama.weight_table(a.config).weights:
    get = lambda m: m.layers if w.path[0] == "layers" else m
    np.testing.assert_array_equal(getattr(get(a), w.path[-1])[...],
                                  getattr(get(b), w.path[-1])[...], err_msg=str(w.path))


def test_hf_directory_goes_through_the_registry(tmp_path):
  cfg, ours, hf = tiny_hf_pair()
  hf.save_pretrained(tmp_path, safe_serialization=True)
  model, config = load.load_model(str(tmp_path), backend="xla")
  assert isinstance(model, llama.Llama) and config.backend == "xla"
  _same_weights(model, ours)


def _permute(w, n_head):
  """llama.cpp's q/k row order (convert_hf_to_gguf.py), which the loader undoes."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
      w.shape)


def test_gguf_goes_through_the_registry(tmp_path):
  gguf = pytest.importorskip("gguf")
  cfg, ours, hf = tiny_hf_pair()
  path = str(tmp_path / "tiny.gguf")
  writer = gguf.GGUFWriter(path, "llama")
  for key, value in [("block_count", cfg.num_layers), ("embedding_length", cfg.hidden_size),
                     ("feed_forward_length", cfg.intermediate_size),
                     ("attention.head_count", cfg.num_heads),
                     ("attention.head_count_kv", cfg.num_kv_heads)]:
    writer.add_uint32(f"llama.{key}", value)
  writer.add_float32("llama.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
  writer.add_float32("llama.rope.freq_base", cfg.rope_theta)
  tensors = {k: v.numpy() for k, v in hf.state_dict().items()}
  for w in llama.weight_table(cfg).weights:
    for i in range(w.num_layers) if w.stacked else [None]:
      t = tensors[w.hf_name(i)]
      if w.projection in ("q", "k"):
        t = _permute(t, cfg.num_heads if w.projection == "q" else cfg.num_kv_heads)
      writer.add_tensor(w.gguf_name(i), np.ascontiguousarray(t, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  model, config = load.load_model(path)
  assert (config.vocab_size, config.num_kv_heads, config.tie_embeddings) == (
      cfg.vocab_size, cfg.num_kv_heads, False)
  _same_weights(model, ours)


def test_unknown_families_are_one_line_model_errors(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(ModelError, match="unsupported architecture.*'gpt2'.*llama") as e:
    load.load_model(str(tmp_path))
  assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(ModelError, match="x.gguf: unsupported GGUF architecture 'bert'"):
    family.for_gguf("bert", "x.gguf")
  assert load.ModelError is ModelError
