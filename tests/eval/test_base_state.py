"""The base as the evaluators run it: frozen stacks in the backend's form, adapters on device,
and a row naming a user the stack lacks refused before any work."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from oppu_jax.eval import base_state
from oppu_jax.models import llama
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.stack import UserAdapters


def _model(backend):
  config = llama.tiny_config(param_dtype="bfloat16", compute_dtype="bfloat16", backend=backend)
  return llama.Llama(config, rngs=nnx.Rngs(0))


def test_cpu_carries_frozen_projections_as_bits_and_xla_leaves_them():
  for backend, dtype in (("cpu", jnp.uint16), ("xla", jnp.bfloat16)):
    graphdef, base, adapters, place = base_state.prepare(_model(backend), None)
    assert base["layers"]["q"][...].dtype == dtype  # a projection: bits under "cpu"
    assert base["layers"]["attn_norm"][...].dtype == jnp.bfloat16  # not a projection
    assert adapters is None and place is None  # no mesh: rows stay where they are
    assert nnx.merge(graphdef, base).config.backend == backend


def test_rows_must_name_a_stacked_user():
  model = _model("xla")
  lora = Lora(targets=("q",), rank=2)
  table = model.weight_table()
  stacked = UserAdapters.stack(lora, [lora.init(table, np.asarray([0, i], np.uint32))
                                      for i in range(2)])
  base_state.check_users(stacked, [(0, [1]), (1, [2])])
  with pytest.raises(ValueError, match="user index 2 out of range for 2 stacked adapters"):
    base_state.check_users(stacked, [(0, [1]), (2, [2])])
  with pytest.raises(TypeError, match="a UserAdapters or None"):
    base_state.check_users({"layers": {}}, [(0, [1])])
