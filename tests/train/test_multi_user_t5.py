"""The multi-user trainer on an encoder-decoder (T5): seq2seq cross-entropy on the target, many
users in one compiled step, each user's adapter a function of its own data only."""

import jax
import numpy as np
import pytest
from flax import nnx

from oppu_jax.data.batching import encode_with_source
from oppu_jax.models import t5, t5_config
from oppu_jax.models import adapted
from oppu_jax.peft.lora import Lora
from oppu_jax.train import multi_user
from oppu_jax.train import user_batches as ub

CFG = t5_config.tiny_config(vocab_size=64)
LORA = Lora(targets=("enc.q", "enc.v", "dec.q", "dec.v", "cross.q", "cross.v"), rank=4,
            alpha=8.0, dropout=0.1)


def _encode(text):
  return [3 + (ord(ch) % 50) for ch in text]


def _plan(user, n, seed=0, answer=None):
  # Lengths depend on the user only, texts on the seed: other seeds change the data, not shapes.
  lengths = np.random.default_rng(user).integers(4, 12, size=n)
  rng = np.random.default_rng([seed, user])
  examples = []
  for length in lengths:
    prompt = "".join(rng.choice(list("abcdefgh"), size=int(length)))
    examples.append(encode_with_source(prompt, answer or f"u{user}", _encode, eos_id=1,
                                   decoder_start_id=0))
  return ub.plan_user(f"user{user}", examples, batch_size=3, epochs=8, seq_buckets=(8, 16),
                      target_buckets=(4, 8))


@pytest.fixture(scope="module")
def model():
  return t5.T5(CFG, rngs=nnx.Rngs(0))


def _train(model, plans, slots):
  config = multi_user.TrainConfig(learning_rate=5e-2, slots=slots, warmup_ratio=0.1)
  return multi_user.train_users(model, LORA, plans, config)


def test_batches_carry_the_encoder_input():
  plan = _plan(0, 5)
  assert plan.shape_key == (8, 4, 16)  # decoder T, targets K, encoder S
  batch = ub.batch_for_step(plan, 0, seed=0)
  assert batch["source_tokens"].shape == batch["source_mask"].shape == (3, 16)
  assert (batch["tokens"][:, 0] == 0).all()  # the decoder starts from the start token


@pytest.mark.slow
def test_users_are_isolated_and_learn(model):
  mine = _plan(0, 7)
  a = _train(model, [mine] + [_plan(i, 5, seed=1) for i in (1, 2)], slots=3)
  b = _train(model, [mine] + [_plan(i, 5, seed=2, answer="u9") for i in (1, 2)], slots=3)
  for x, y in zip(jax.tree.leaves(a["user0"].adapter), jax.tree.leaves(b["user0"].adapter)):
    np.testing.assert_array_equal(x, y)
  alone = _train(model, [mine], slots=1)["user0"].adapter
  for x, y in zip(jax.tree.leaves(a["user0"].adapter), jax.tree.leaves(alone)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  losses = a["user0"].losses
  assert np.mean(losses[-2:]) < 0.75 * np.mean(losses[:2])  # it learns its own answer
  # The trained adapter is used through the encoder-decoder hook: it changed the logits.
  batch = ub.batch_for_step(mine, 0, seed=0)
  encoder = {"tokens": batch["source_tokens"], "attention_mask": batch["source_mask"]}
  args = (batch["tokens"], batch["positions"], batch["attention_mask"])
  trained = adapted.forward(model, LORA, a["user0"].adapter, *args, encoder=encoder)
  fresh = adapted.forward(model, LORA, LORA.init(model.weight_table(), jax.random.PRNGKey(0)),
                        *args, encoder=encoder)
  assert float(np.abs(np.asarray(trained) - np.asarray(fresh)).max()) > 1e-2
