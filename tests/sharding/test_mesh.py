"""The base's shardings come from the model's weight table through RULES."""

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
