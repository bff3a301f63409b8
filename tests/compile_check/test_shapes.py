"""compile_check.shapes: published shapes -> abstract models through the families' readers."""

import json
import math

import jax
import pytest
from flax import nnx

from oppu_jax.compile_check import shapes
from oppu_jax.errors import ModelError


def _params(model) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model)))


@pytest.mark.parametrize("name, count", [
    ("llama-2-7b", 6_738_415_616),  # the published parameter counts
    ("llama-2-13b", 13_015_864_320),
    ("smollm2-135m", 134_515_008),
])
def test_known_decoder_models_have_their_published_sizes(name, count):
  model = shapes.abstract_model(name)
  assert _params(model) == count
  leaf = jax.tree.leaves(nnx.state(model))[0]
  assert isinstance(leaf, jax.ShapeDtypeStruct)  # no weight is allocated
  assert model.config.backend == "xla" and model.config.param_dtype == "bfloat16"


def test_flan_t5_xxl_keeps_its_own_head_and_shapes():
  model = shapes.abstract_model("flan-t5-xxl")
  c = model.config
  assert (c.d_model, c.d_kv, c.num_heads, c.d_ff, c.num_layers, c.num_decoder_layers) == (
      4096, 64, 64, 10240, 24, 24)
  assert not c.tie_embeddings and c.gated
  assert 11.0e9 < _params(model) < 11.2e9  # "11B"


def test_a_config_json_path_or_directory_reads_like_a_checkpoint(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(shapes.KNOWN["tiny-llama"]))
  a = shapes.abstract_model(str(tmp_path))
  b = shapes.abstract_model(str(tmp_path / "config.json"))
  assert a.config == b.config == shapes.abstract_model("tiny-llama").config


def test_unknown_models_and_bad_files_are_one_line_errors(tmp_path):
  with pytest.raises(ModelError, match="neither a known model"):
    shapes.abstract_model("llama-9")
  bad = tmp_path / "config.json"
  bad.write_text("{not json")
  with pytest.raises(ModelError, match="not a readable JSON config"):
    shapes.abstract_model(str(bad))
  bad.write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(ModelError, match="unsupported architecture"):
    shapes.abstract_model(str(bad))
