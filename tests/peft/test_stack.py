"""UserAdapters: stacking, one user's slot in and out (also under jit), per-row gathering, sizes,
and the HF PEFT round trip of a whole stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oppu_jax.errors import AdapterFormatError, ConfigError
from oppu_jax.peft import hf_format
from oppu_jax.peft.ia3 import IA3
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.prompt_tuning import PromptTuning
from oppu_jax.peft.stack import UserAdapters, scaled

LORA = Lora(targets=("q", "down"), rank=2, alpha=4.0)


def _users(table, n, method=LORA):
  rng = np.random.default_rng(n)
  one = method.init(table, jax.random.key(0))
  return [jax.tree.map(lambda x: rng.normal(0, 1, x.shape).astype(np.float32), one)
          for _ in range(n)]


def test_stack_user_and_sizes(table):
  users = _users(table, 3)
  stacked = UserAdapters.stack(LORA, users)
  assert stacked.num_users == 3 and stacked.method == LORA
  q = table.projections["q"]
  assert stacked.tree["layers"]["q"]["a"].shape == (3, q.num_layers, q.shape[0], 2)
  for i, one in enumerate(users):
    jax.tree.map(np.testing.assert_array_equal, stacked.user(i), one)
  per_user = sum(x.nbytes for x in jax.tree.leaves(users[0]))
  assert stacked.nbytes == 3 * per_user and stacked.bytes_per_user == per_user
  with pytest.raises(ValueError, match="no adapters"):
    UserAdapters.stack(LORA, [])


def test_like_and_set_user_under_jit(table):
  users = _users(table, 2)
  slots = UserAdapters.like(LORA, users[0], 3)
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(slots.tree))
  fill = jax.jit(lambda s, i, a: s.set_user(i, a))
  slots = fill(slots, 2, users[1])  # a traced index, one program for every slot
  slots = fill(slots, 0, users[0])
  assert isinstance(slots, UserAdapters) and slots.method == LORA
  jax.tree.map(np.testing.assert_array_equal, slots.user(0), users[0])
  jax.tree.map(np.testing.assert_array_equal, slots.user(2), users[1])
  assert all(float(np.abs(x).max()) == 0 for x in jax.tree.leaves(slots.user(1)))
  # Outside jit, host (numpy) stacks work too.
  host = UserAdapters.stack(LORA, users).set_user(0, users[1])
  jax.tree.map(np.testing.assert_array_equal, host.user(0), users[1])


def test_gather_rows_and_method_is_static(table):
  users = _users(table, 3)
  stacked = UserAdapters.stack(LORA, users)
  rows = jax.jit(lambda s, u: s.gather(u))(stacked, jnp.array([2, 0, 2, 1]))
  for r, u in enumerate([2, 0, 2, 1]):
    jax.tree.map(lambda got, want: np.testing.assert_array_equal(got[r], want), rows, users[u])
  other = UserAdapters(stacked.tree, Lora(targets=("q", "down"), rank=2, alpha=8.0))
  assert jax.tree.structure(other) != jax.tree.structure(stacked)  # the method is in the treedef
  assert len(jax.tree.leaves(stacked)) == len(jax.tree.leaves(users[0]))


def test_saved_users_load_as_one_stack(table, tmp_path):
  stacked = UserAdapters.stack(LORA, _users(table, 3))
  dirs = [tmp_path / f"user{i}" for i in range(3)]
  for i, d in enumerate(dirs):
    hf_format.save_adapter(d, stacked.method, stacked.user(i), table)
  loaded = UserAdapters.load(dirs[::-1], table)
  assert loaded.method == LORA and loaded.num_users == 3
  for i in range(3):
    jax.tree.map(np.testing.assert_array_equal, loaded.user(i), stacked.user(2 - i))


def test_load_refuses_mixed_methods(table, tmp_path):
  hf_format.save_adapter(tmp_path / "a", LORA, _users(table, 1)[0], table)
  hf_format.save_adapter(tmp_path / "b", IA3(), _users(table, 1, IA3())[0], table)
  with pytest.raises(AdapterFormatError, match="one stack holds one method") as err:
    UserAdapters.load([tmp_path / "a", tmp_path / "b"], table)
  assert str(err.value).startswith(str(tmp_path / "b")) and "\n" not in str(err.value)


def test_scaled_adapters_move_toward_the_base(table):
  stacked = UserAdapters.stack(LORA, _users(table, 2))
  half = stacked.scaled(0.5)
  assert stacked.scaled(1.0) is stacked
  for user in range(2):
    for target in LORA.targets:
      np.testing.assert_allclose(LORA.delta(half.user(user), target),
                                 0.5 * LORA.delta(stacked.user(user), target), atol=1e-6)
  one = stacked.user(1)  # a single adapter (as the server reads it) scales the same way
  np.testing.assert_allclose(scaled(LORA, one, 0.5)["layers"]["q"]["b"],
                             half.user(1)["layers"]["q"]["b"], atol=1e-7)
  ia3 = IA3(targets=("k", "v", "down"), feedforward=("down",))
  scales = UserAdapters.stack(ia3, _users(table, 2, ia3))
  gone = scales.scaled(0.0)
  assert all(float(np.abs(x - 1).max()) == 0 for x in jax.tree.leaves(gone.tree))
  np.testing.assert_allclose(scales.scaled(0.5).tree["layers"]["k"] - 1,
                             0.5 * (scales.tree["layers"]["k"] - 1), atol=1e-6)


def test_prompt_tuning_has_no_strength_to_scale(table):
  method = PromptTuning(num_virtual_tokens=2)
  adapters = UserAdapters.stack(method, [{"prompt": np.ones((2, 8), np.float32)}])
  assert adapters.scaled(1.0) is adapters
  with pytest.raises(ConfigError, match="config.eval.adapter_scale: prompt_tuning"):
    adapters.scaled(0.5)
