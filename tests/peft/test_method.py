"""A new PEFT method is one class: a toy method defined here, registered under its own name,
trains, scores, generates and round-trips through the HF PEFT files with no change elsewhere;
registry errors are one line naming the key or file."""

import dataclasses
import json
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from oppu_jax.data.batching import Example
from oppu_jax.errors import AdapterFormatError, ConfigError
from oppu_jax.eval.decode import generate_for_rows
from oppu_jax.eval.score import score_choices
from oppu_jax.models.decoding import Decoding
from oppu_jax.peft import hf_format, method
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.merge import merge
from oppu_jax.peft.stack import UserAdapters
from oppu_jax.train import multi_user
from oppu_jax.train.user_batches import plan_user


@method.register
@dataclasses.dataclass(frozen=True)
class VBias:
  """A learned bias on every layer's value projection output (zero = the bare base)."""

  name: ClassVar[str] = "test_v_bias"
  peft_type: ClassVar[str] = "OPPU_TEST_V_BIAS"

  scale: float = 1.0

  @classmethod
  def from_config(cls, peft_config, context):
    return cls(scale=float(peft_config.scale))

  def init(self, table, key, embed=None):
    v = table.projections["v"]
    return {"layers": {"v": jnp.zeros((v.num_layers, v.shape[1]), jnp.float32)}}

  def project(self, name, x, w, adapter_layer, rng, matmul):
    y = matmul(x, w)
    return y + self.scale * adapter_layer["v"] if name == "v" else y

  def prefix(self, adapter):
    return None

  def to_hf(self, adapter, table, model_config=None):
    bias = np.asarray(adapter["layers"]["v"], np.float32)  # [layers, d_out]
    tensors = {_name(table, i): bias[i] for i in range(bias.shape[0])}
    return {"target_modules": hf_format.hf_targets(table, ("v",)), "scale": self.scale}, tensors

  @classmethod
  def from_hf(cls, hf_config, tensors, table, model_config, where):
    v = table.projections["v"]
    want = {_name(table, i): (v.shape[1],) for i in range(v.num_layers)}
    hf_format.check_tensors(tensors, want, where.weights)
    scale = hf_format.number(hf_config, "scale", float, where.config)
    return cls(scale=scale), {"layers": {"v": hf_format.stack_layers([tensors[k] for k in want])}}


def _name(table, layer):
  return hf_format.tensor_name(table, layer, "v", "v_bias")


def _random(table, seed, std=0.5):
  one = VBias().init(table, None)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (rng.normal(0, std, x.shape)).astype(np.float32), one)


def test_built_by_config_name(table):
  peft = ml_collections.ConfigDict(dict(method="test_v_bias", scale=2.0))
  assert method.build(peft, table=table) == VBias(scale=2.0)
  assert method.get("test_v_bias") is VBias and method.by_peft_type("OPPU_TEST_V_BIAS") is VBias
  assert isinstance(VBias(), method.PeftMethod)


def test_trains_with_the_multi_user_trainer(tiny):
  _, model = tiny
  rng = np.random.default_rng(0)
  plans = []
  for u in range(2):  # each user answers every prompt with its own token
    examples = []
    for _ in range(8):
      tokens = np.concatenate([rng.integers(3, 30, 6), [40 + u, 2]]).astype(np.int32)
      examples.append(Example(tokens, np.arange(len(tokens)) >= len(tokens) - 2))
    plans.append(plan_user(f"u{u}", examples, batch_size=4, epochs=4, seq_buckets=(16,),
                           target_buckets=(2,)))
  config = multi_user.TrainConfig(learning_rate=5e-2, slots=2, warmup_ratio=0.0)
  results = multi_user.train_users(model, VBias(), plans, config)
  for u in ("u0", "u1"):
    r = results[u]
    assert np.abs(r.adapter["layers"]["v"]).max() > 1e-3  # the bias moved
    assert np.mean(r.losses[-2:]) < np.mean(r.losses[:2]) - 0.1, r.losses
  assert np.abs(results["u0"].adapter["layers"]["v"] - results["u1"].adapter["layers"]["v"]).max(
  ) > 1e-3


@pytest.mark.slow
def test_scores_and_generates_per_user(tiny, table, forward):
  _, model = tiny
  stacked = UserAdapters.stack(VBias(), [_random(table, 1), _random(table, 2)])
  rows = [(0, [5, 17, 33]), (1, [5, 17, 33]), (1, [44, 9])]
  choices = [[7, 8], [40]]
  got = score_choices(model, stacked, rows, choices, batch_size=4, buckets=(16,))
  bare = score_choices(model, None, rows, choices, batch_size=4, buckets=(16,))
  for r, (user, prompt) in enumerate(rows):
    adapter = jax.tree.map(jnp.asarray, stacked.user(user))
    for j, choice in enumerate(choices):
      seq = np.asarray([prompt + choice])
      logp = jax.nn.log_softmax(forward(model, VBias(), adapter, jnp.asarray(seq),
                                        jnp.arange(seq.shape[1])[None], jnp.ones(seq.shape, bool)))
      want = sum(float(logp[0, len(prompt) - 1 + i, t]) for i, t in enumerate(choice))
      np.testing.assert_allclose(got[r, j], want, atol=1e-4)
  assert np.abs(got[0] - got[1]).max() > 1e-3 and np.abs(got - bare).max() > 1e-3

  decoding = Decoding(max_new_tokens=4, batch_size=4, prompt_buckets=(8,))
  generated = generate_for_rows(model, stacked, rows, decoding, eos_id=-1, pad_id=0)
  for (user, prompt), ids in zip(rows, generated):
    adapter = jax.tree.map(jnp.asarray, stacked.user(user))
    seq = list(prompt)
    for _ in range(4):  # greedy by full recompute
      logits = forward(model, VBias(), adapter, jnp.asarray([seq]), jnp.arange(len(seq))[None],
                       jnp.ones((1, len(seq)), bool))
      seq.append(int(np.argmax(logits[0, -1])))
    assert ids == seq[len(prompt):]


def test_round_trips_through_hf_files(table, tmp_path):
  stacked = UserAdapters.stack(VBias(scale=0.5), [_random(table, 3), _random(table, 4)])
  for i in range(2):
    hf_format.save_adapter(tmp_path / f"u{i}", stacked.method, stacked.user(i), table)
  config = json.loads((tmp_path / "u0" / hf_format.CONFIG_NAME).read_text())
  assert config["peft_type"] == "OPPU_TEST_V_BIAS" and config["target_modules"] == ["v_proj"]
  loaded = UserAdapters.load([tmp_path / "u0", tmp_path / "u1"], table)
  assert loaded.method == VBias(scale=0.5)
  jax.tree.map(np.testing.assert_array_equal, loaded.tree, stacked.tree)


def test_a_method_without_merge_is_refused(tiny, table):
  _, model = tiny
  with pytest.raises(TypeError, match="'test_v_bias' cannot be merged"):
    merge(model, VBias(), _random(table, 0))


def test_registry_errors_are_one_line_and_name_the_key_or_file(tmp_path):
  with pytest.raises(ConfigError) as err:
    method.get("loha")
  message = str(err.value)
  assert message.startswith("config.peft.method: unknown 'loha'") and "\n" not in message
  assert all(n in message for n in ("lora", "ia3", "prompt_tuning", "test_v_bias"))

  path = str(tmp_path / "u0" / hf_format.CONFIG_NAME)
  with pytest.raises(AdapterFormatError) as err:
    method.by_peft_type("LOHA", path)
  assert str(err.value).startswith(f"{path}: unsupported peft_type 'LOHA'")
  assert "\n" not in str(err.value)

  with pytest.raises(ValueError, match="'lora' is already registered"):
    method.register(type("Other", (), {"name": "lora", "peft_type": "OTHER"}))
  assert method.get("lora") is Lora
