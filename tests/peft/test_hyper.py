"""The hypernetwork (peft/hyper.py): adapters shaped as the method makes them, identity at the
start, a user's adapter a function of its own embedding only, and HF PEFT's logits equal ours
for a generated adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oppu_jax.errors import ConfigError, DataError
from oppu_jax.models import llama
from oppu_jax.peft.hf_format import save_adapter
from oppu_jax.peft.hyper import Hypernetwork
from oppu_jax.peft.ia3 import IA3
from oppu_jax.peft.lora import Lora

TABLE = llama.weight_table(llama.tiny_config())
EMBED = 12


def _embeddings(n, seed=0):
  return np.random.default_rng(seed).normal(size=(n, EMBED)).astype(np.float32)


def _params(method, hyper=Hypernetwork(hidden=8, rank=4), seed=0):
  params = hyper.init(lambda k: method.init(TABLE, k), _embeddings(6), jax.random.PRNGKey(seed))
  return hyper, params


def _trained_like(params, seed=1):
  """The params with every trainable leaf moved (as training would): generated adapters differ."""
  rng = np.random.default_rng(seed)
  net = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32),
                     params["net"])
  return {"inputs": params["inputs"], "net": net}


@pytest.mark.parametrize("method", [Lora(targets=("q", "v"), rank=4), IA3()])
def test_generated_adapters_have_the_methods_shapes_and_start_as_a_fresh_one(method):
  hyper, params = _params(method)
  fresh = method.init(TABLE, jax.random.PRNGKey(3))
  for e in _embeddings(3, seed=5):
    adapter = hyper.generate(params, jnp.asarray(e))
    assert jax.tree.structure(adapter) == jax.tree.structure(fresh)
    for got, want in zip(jax.tree.leaves(adapter), jax.tree.leaves(fresh)):
      assert got.shape == want.shape and got.dtype == want.dtype
  if isinstance(method, Lora):  # B = 0 for every user: the adapted model is the base
    for target in method.targets:
      assert not np.any(np.asarray(adapter["layers"][target]["b"]))
      assert np.any(np.asarray(adapter["layers"][target]["a"]))
  else:  # (IA)^3 starts at ones for every user
    for leaf in jax.tree.leaves(adapter):
      np.testing.assert_array_equal(np.asarray(leaf), 1.0)


def test_a_users_adapter_depends_on_its_own_embedding_only():
  hyper, params = _params(Lora(targets=("q", "v"), rank=4))
  params = _trained_like(params)
  users = jnp.asarray(_embeddings(4, seed=7))
  others = users.at[1:].set(jnp.asarray(_embeddings(3, seed=8)))
  batched = jax.vmap(lambda e: hyper.generate(params, e))
  alone = hyper.generate(params, users[0])
  for stacked in (batched(users), batched(others)):
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(stacked)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b)[0], rtol=1e-6, atol=1e-7)
  # ... and another embedding gives another adapter
  other = hyper.generate(params, users[1])
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(other)))


def test_the_inputs_are_standardised_by_the_training_users():
  hyper, params = _params(Lora(targets=("q",), rank=2))
  e = _embeddings(6)
  np.testing.assert_allclose(params["inputs"]["mean"], e.mean(0), rtol=1e-5)
  np.testing.assert_allclose(params["inputs"]["scale"], e.std(0) + 1e-6, rtol=1e-5)
  # the mixing weights of the mean user are those of z = 0
  c = hyper.mixing(params, params["inputs"]["mean"])
  np.testing.assert_allclose(c, jnp.tanh(params["net"]["b1"]) @ params["net"]["w2"]
                             + params["net"]["b2"], rtol=1e-6)


def test_bad_settings_fail_in_one_line():
  with pytest.raises(ConfigError, match="config.hyper"):
    Hypernetwork(hidden=0)
  with pytest.raises(DataError, match="at least 2 training users"):
    Hypernetwork().init(lambda k: Lora().init(TABLE, k), _embeddings(1), jax.random.PRNGKey(0))


def test_a_generated_lora_loads_in_hf_peft_with_our_logits(forward, tmp_path):
  torch = pytest.importorskip("torch")
  peft_lib = pytest.importorskip("peft")
  from tiny_hf import tiny_hf_pair

  cfg, ours, hf = tiny_hf_pair()
  method = Lora(targets=("q", "k", "v", "o"), rank=4, alpha=8.0)
  table = llama.weight_table(cfg)
  hyper = Hypernetwork(hidden=8, rank=4)
  params = _trained_like(hyper.init(lambda k: method.init(table, k), _embeddings(6),
                                    jax.random.PRNGKey(0)), seed=2)
  adapter = hyper.generate(params, jnp.asarray(_embeddings(1, seed=9)[0]))
  save_adapter(tmp_path / "u9", method, adapter, table)
  hf_peft = peft_lib.PeftModel.from_pretrained(hf, tmp_path / "u9").eval()
  tokens = np.array([[5, 17, 33, 2, 91, 64, 8, 12], [0, 0, 0, 44, 9, 71, 3, 100]])
  mask = np.array([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]], bool)
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  got = np.asarray(forward(ours, method, adapter, jnp.asarray(tokens), jnp.asarray(positions),
                           jnp.asarray(mask)))[mask]
  bare = np.asarray(forward(ours, None, None, jnp.asarray(tokens), jnp.asarray(positions),
                            jnp.asarray(mask)))[mask]
  with torch.no_grad():
    want = hf_peft(input_ids=torch.tensor(tokens),
                   attention_mask=torch.tensor(mask.astype(np.int64)),
                   position_ids=torch.tensor(positions)).logits.numpy()[mask]
  scale = np.abs(want).max()
  assert np.abs(got - want).max() / scale <= 1e-5
  assert np.abs(bare - want).max() / scale > 1e-3  # the generated adapter changes the model
