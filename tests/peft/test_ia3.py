"""(IA)³: a fresh adapter is the identity; the vectors scale the right side of each projection."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from oppu_jax.errors import ConfigError
from oppu_jax.peft import method
from oppu_jax.peft.ia3 import IA3

TOKENS = jnp.array([[5, 17, 33, 2, 91, 64, 8, 12], [0, 0, 0, 44, 9, 71, 3, 100]])
MASK = jnp.array([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]], bool)
POSITIONS = jnp.maximum(jnp.cumsum(MASK, 1) - 1, 0)


def test_fresh_adapter_leaves_logits_unchanged(tiny, table, forward):
  cfg, model = tiny
  ia3 = IA3(targets=("k", "v", "up", "down"), feedforward=("down",))
  adapter = ia3.init(table, None)
  bare = forward(model, None, None, TOKENS, POSITIONS, MASK)
  got = forward(model, ia3, adapter, TOKENS, POSITIONS, MASK)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(bare))


def test_vectors_scale_outputs_and_feedforward_inputs(tiny, table, forward):
  """Attention targets scale W's output columns; feed-forward targets scale W's input rows."""
  cfg, model = tiny
  ia3 = IA3(targets=("k", "v", "down"), feedforward=("down",))
  rng = np.random.default_rng(0)
  adapter = {"layers": {t: jnp.asarray(1 + 0.3 * rng.standard_normal(v.shape), jnp.float32)
                        for t, v in ia3.init(table, None)["layers"].items()}}
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state)
  for target, vec in adapter["layers"].items():
    w = pure["layers"][target]  # [layers, d_in, d_out]
    pure["layers"][target] = w * (vec[:, :, None] if target == "down" else vec[:, None, :])
  nnx.replace_by_pure_dict(state, pure)
  scaled = nnx.merge(graphdef, state)
  applied = np.asarray(forward(model, ia3, adapter, TOKENS, POSITIONS, MASK))
  folded = np.asarray(forward(scaled, None, None, TOKENS, POSITIONS, MASK))
  bare = np.asarray(forward(model, None, None, TOKENS, POSITIONS, MASK))
  np.testing.assert_allclose(applied, folded, atol=1e-5)
  assert np.abs(applied - bare).max() > 1e-2


def test_feedforward_vector_has_input_size(tiny, table):
  cfg, _ = tiny
  layers = IA3(targets=("v", "down"), feedforward=("down",)).init(table, None)["layers"]
  assert layers["down"].shape == (cfg.num_layers, cfg.intermediate_size)
  assert layers["v"].shape == (cfg.num_layers, cfg.num_kv_heads * cfg.dim_per_head)


def test_bad_targets_raise(table):
  with pytest.raises(ConfigError, match=r"unknown projection 'value'"):
    IA3(targets=("k", "value")).init(table, None)
  with pytest.raises(ConfigError, match=r"unknown projection 'mlp'"):
    IA3(feedforward=("mlp",)).init(table, None)


def test_built_from_config_on_the_papers_targets(table):
  """`peft.targets` are LoRA's (q, v): (IA)³ keeps k, v and down."""
  peft = ml_collections.ConfigDict(dict(method="ia3", targets=("q", "v"), rank=8))
  assert method.build(peft, table=table) == IA3(targets=("k", "v", "down"), feedforward=("down",))
