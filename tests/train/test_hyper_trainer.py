"""The hypernetwork trainer (train/hyper.py): its order of work, and that it learns a map from a
user's embedding to an adapter that holds for users it never saw."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import synthetic_users as su
from oppu_jax.models import backend, llama
from oppu_jax.peft import lora
from oppu_jax.peft.hyper import Hypernetwork
from oppu_jax.train import hyper as hyper_train
from oppu_jax.train.loss import loss_terms
from oppu_jax.train.user_batches import batch_for_step

CFG = llama.tiny_config(vocab_size=64)


def test_every_users_batch_comes_once_per_epoch_in_steps_of_one_shape():
  plans = [su.plan(i, n, epochs=1) for i, n in enumerate([3, 5, 9, 13, 20, 6])]
  config = hyper_train.HyperTrainConfig(users_per_step=3, epochs=2, seed=4)
  steps = hyper_train.steps_of(plans, config)
  seen = collections.Counter(pair for step in steps for pair in step)
  want = {(i, s + e * p.steps_per_epoch) for i, p in enumerate(plans) for e in range(2)
          for s in range(p.steps_per_epoch)}
  assert set(seen) == want and set(seen.values()) == {1}
  for step in steps:
    assert 1 <= len(step) <= 3
    assert len({plans[i].shape_key for i, _ in step}) == 1
  assert steps == hyper_train.steps_of(plans, config)  # same seed, same order
  assert steps != hyper_train.steps_of(plans, hyper_train.HyperTrainConfig(
      users_per_step=3, epochs=2, seed=5))


@pytest.mark.slow
def test_it_learns_an_embedding_to_adapter_map_that_holds_for_unseen_users():
  """Users of kind A answer token 40, of kind B token 41; a user's embedding says its kind (plus
  noise). Trained on 8 users, the network's adapter for an unseen user fits that user's answers
  better from its own embedding than from the other kind's."""
  model = llama.Llama(CFG, rngs=nnx.Rngs(0))
  model.lm_head[...] = model.lm_head[...] * 20  # logits that can be confident (test_multi_user)
  method = lora.Lora(targets=("q", "v"), rank=4, alpha=8.0)
  rng = np.random.default_rng(0)

  def embedding(kind):
    return np.eye(2, 6)[kind] + 0.1 * rng.standard_normal(6)

  kinds = [0, 1] * 4
  plans = [su.plan(i, 8, answer=40 + k, epochs=1) for i, k in enumerate(kinds)]
  embeddings = np.stack([embedding(k) for k in kinds]).astype(np.float32)
  hyper = Hypernetwork(hidden=16, rank=4)
  params = hyper.init(lambda key: method.init(model.weight_table(), key), embeddings,
                      jax.random.PRNGKey(0))
  config = hyper_train.HyperTrainConfig(learning_rate=3e-2, users_per_step=4, epochs=12,
                                        warmup_ratio=0.0)
  params, losses = hyper_train.train_hypernetwork(model, method, hyper, params, embeddings,
                                                  plans, config)
  assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses

  graphdef, state = nnx.split(model)
  base = backend.frozen_base(state, model.config, model.weight_table())

  def loss(adapter, plan):
    total, weight = loss_terms(graphdef, method, adapter, base, batch_for_step(plan, 0, 0), None)
    return float(total / weight)

  for kind in (0, 1):
    unseen = su.plan(100 + kind, 8, seed=9, answer=40 + kind, epochs=1)
    own = hyper.generate(params, jnp.asarray(embedding(kind), jnp.float32))
    other = hyper.generate(params, jnp.asarray(embedding(1 - kind), jnp.float32))
    assert loss(own, unseen) < 0.5 * loss(other, unseen), (kind, loss(own, unseen),
                                                            loss(other, unseen))
