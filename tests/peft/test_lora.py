"""LoRA: a fresh adapter is the identity, merging equals applying, bad targets are refused."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from oppu_jax.errors import ConfigError
from oppu_jax.models import llama
from oppu_jax.peft import method
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.merge import merge

ALL = ("q", "k", "v", "o", "gate", "up", "down")
TOKENS = jnp.array([[5, 17, 33, 2, 91, 64, 8, 12], [0, 0, 0, 44, 9, 71, 3, 100]])
MASK = jnp.array([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]], bool)
POSITIONS = jnp.maximum(jnp.cumsum(MASK, 1) - 1, 0)


@pytest.mark.parametrize("targets", [("q", "v"), ALL])
def test_fresh_adapter_leaves_logits_unchanged(tiny, table, forward, targets):
  cfg, model = tiny
  lora = Lora(targets=targets, rank=4, alpha=8.0)
  adapter = jax.jit(lora.init, static_argnums=0)(table, jax.random.key(0))
  assert all(np.abs(np.asarray(t["a"])).max() > 0 for t in adapter["layers"].values())
  bare = forward(model, None, None, TOKENS, POSITIONS, MASK)
  got = forward(model, lora, adapter, TOKENS, POSITIONS, MASK)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(bare))


def test_merge_equals_applying(tiny, forward):
  cfg, model = tiny
  lora = Lora(targets=ALL, rank=4, alpha=6.0)
  adapter = _random_adapter(cfg, lora)
  before = np.asarray(model.layers.q[...])
  merged = merge(model, lora, adapter)
  applied = np.asarray(forward(model, lora, adapter, TOKENS, POSITIONS, MASK))
  folded = np.asarray(forward(merged, None, None, TOKENS, POSITIONS, MASK))
  bare = np.asarray(forward(model, None, None, TOKENS, POSITIONS, MASK))
  np.testing.assert_allclose(folded, applied, atol=1e-5)
  assert np.abs(applied - bare).max() > 1e-2  # the adapter is not a no-op
  np.testing.assert_array_equal(np.asarray(model.layers.q[...]), before)  # base untouched


def test_built_from_config_and_bad_targets_raise(table):
  peft = ml_collections.ConfigDict(dict(method="lora", targets=("v", "q"), rank=2, alpha=4,
                                        dropout=0.1))
  # Targets come back in model order, as HF PEFT files are read back.
  assert method.build(peft, table=table) == Lora(targets=("q", "v"), rank=2, alpha=4.0,
                                                 dropout=0.1)
  peft.targets = ("q", "q_proj")
  with pytest.raises(ConfigError,
                     match=r"config.peft.targets: unknown projection 'q_proj'"):
    method.build(peft, table=table)
  with pytest.raises(ConfigError, match="unknown projection"):
    Lora(targets=("q", "q_proj")).init(table, jax.random.key(0))


def _random_adapter(cfg, lora, seed=0):
  """Random nonzero A and B, in numpy (eager jax.random compiles op by op)."""
  rng, projections = np.random.default_rng(seed), llama.weight_table(cfg).projections
  layers = {}
  for target in lora.targets:
    d_in, d_out = projections[target].shape
    layers[target] = {
        "a": jnp.asarray(rng.normal(0, d_in**-0.5, (cfg.num_layers, d_in, lora.rank)), jnp.float32),
        "b": jnp.asarray(rng.normal(0, 0.1, (cfg.num_layers, lora.rank, d_out)), jnp.float32),
    }
  return {"layers": layers}
