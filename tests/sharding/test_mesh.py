"""The base's shardings come from the model's weight table through RULES."""

import logging
import types

import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from oppu_jax.models import llama
from oppu_jax.sharding import mesh as mesh_lib


@pytest.mark.parametrize("tie", [False, True])
def test_shard_base_follows_the_weight_table(tie):
  model = llama.Llama(llama.tiny_config(tie_embeddings=tie), rngs=nnx.Rngs(0))
  state = mesh_lib.shard_base(nnx.state(model), mesh_lib.make_mesh(users=1, model=1),
                              model.weight_table())
  spec = lambda *path: state[path[0]][path[1]][...].sharding.spec if len(path) == 2 else (
      state[path[0]][...].sharding.spec)
  assert spec("layers", "q") == P(None, None, "model")  # ("layers", "embed", "heads")
  assert spec("layers", "down") == P(None, "model", None)  # ("layers", "mlp", "embed")
  assert spec("layers", "attn_norm") == P(None, None)
  assert spec("embed") == P("model", None)  # ("vocab", "embed")
  assert ("lm_head" in state) == (not tie)
  if not tie:
    assert spec("lm_head") == P(None, "model")


def test_a_dimension_the_mesh_does_not_divide_stays_whole_and_is_said_once(caplog):
  mesh = types.SimpleNamespace(shape={"users": 1, "model": 2})  # spec reads only the sizes
  with caplog.at_level(logging.INFO):
    for _ in range(2):
      assert mesh_lib.spec(("vocab", "embed"), (49153, 8), mesh) == P(None, None)
  said = [r.getMessage() for r in caplog.records if "49153" in r.getMessage()]
  assert len(said) == 1 and "'vocab'" in said[0] and "replicated" in said[0]
  assert mesh_lib.spec(("vocab", "embed"), (64, 8), mesh) == P("model", None)
