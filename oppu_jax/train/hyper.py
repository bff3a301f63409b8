"""Trains a hypernetwork (peft/hyper.py) end to end through the frozen base, many users per step.

Each step takes U training users of one batch shape, each at one of its own batches (the batches
its OPPU plan would read, `UserBatches`); the step generates those users' adapters from their
embeddings, runs the model under each (a loop over the users, each user's gradient taken inside
it, as the multi-user trainer loops users on a CPU), and backpropagates the mean of the users'
losses into the one shared network. A user's rows reach only its own generated adapter's loss;
what the users share is the network, which is the point: a new user's adapter comes from what all
of them taught it.

Order of work per epoch: every (user, batch) pair once, grouped by batch shape (one compilation
per shape), shuffled from the seed, cut into steps of U; a shape's last step has idle rows (zero
weight, masked out of the mean). Same plans, embeddings, config and seed => the same network.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.models import backend
from oppu_jax.peft.hyper import Hypernetwork, Params
from oppu_jax.train import optim
from oppu_jax.train.loss import loss_terms
from oppu_jax.train.multi_user import StepReport
from oppu_jax.train.user_batches import UserBatches, UserPlan, user_seed


@dataclasses.dataclass(frozen=True)
class HyperTrainConfig:
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  clip_norm: float = 1.0
  warmup_ratio: float = 0.05
  users_per_step: int = 8  # U: users whose adapters one step generates and trains through
  epochs: int = 1  # passes over every training user's batches
  seed: int = 0


def steps_of(plans: Sequence[UserPlan], config: HyperTrainConfig) -> list[list[tuple[int, int]]]:
  """The training order: steps, each a list of (plan index, that plan's step) of one shape."""
  rng = np.random.default_rng(zlib.crc32(f"hyper:{config.seed}".encode()))
  steps = []
  for epoch in range(config.epochs):
    by_shape: dict[tuple, list[tuple[int, int]]] = {}
    for i, plan in enumerate(plans):
      for s in range(plan.steps_per_epoch):
        by_shape.setdefault(plan.shape_key, []).append((i, s + epoch * plan.steps_per_epoch))
    epoch_steps = []
    for shape in sorted(by_shape):
      pairs = by_shape[shape]
      order = rng.permutation(len(pairs))
      pairs = [pairs[j] for j in order]
      epoch_steps += [pairs[k:k + config.users_per_step]
                      for k in range(0, len(pairs), config.users_per_step)]
    steps += [epoch_steps[j] for j in rng.permutation(len(epoch_steps))]
  return steps


def train_hypernetwork(model, peft, hyper: Hypernetwork, params: Params, embeddings: np.ndarray,
                       plans: Sequence[UserPlan], config: HyperTrainConfig, *,
                       progress: Callable[[StepReport], None] | None = None
                       ) -> tuple[Params, list[float]]:
  """Trains params["net"] on `plans` (one per training user; `embeddings[i]` is plans[i]'s user)
  -> (params, the mean loss of each step)."""
  if len(plans) != len(embeddings):
    raise ValueError(f"{len(plans)} plans but {len(embeddings)} embeddings")
  graphdef, state = nnx.split(model)
  base = backend.frozen_base(state, model.config, model.weight_table(), transposed=True)
  tx = optim.adamw_without_lr(config.weight_decay, config.clip_norm)
  opt_state = tx.init(params["net"])
  embeddings = np.asarray(embeddings, np.float32)
  order = steps_of(plans, config)
  batches = [UserBatches(p, config.seed) for p in plans]
  keys = [np.asarray(jax.random.PRNGKey(user_seed(config.seed, p.user_id))) for p in plans]
  step_fn = jax.jit(functools.partial(_step, graphdef, peft, hyper, tx), donate_argnums=(1, 2))
  losses, report = [], StepReport(0, len(order), 0, 0, len(plans))
  for n, pairs in enumerate(order):
    rows = [batches[i](s) for i, s in pairs]
    idle = {k: np.zeros_like(v) for k, v in rows[0].items()}
    rows += [idle] * (config.users_per_step - len(rows))
    stacked = {k: np.stack([r[k] for r in rows]) for k in idle}
    users = [i for i, _ in pairs] + [pairs[0][0]] * (config.users_per_step - len(pairs))
    real = np.arange(config.users_per_step) < len(pairs)
    user_keys = np.stack([np.asarray(jax.random.fold_in(keys[i], s)) for i, s in pairs]
                         + [keys[pairs[0][0]]] * (config.users_per_step - len(pairs)))
    lr = optim.linear_schedule(n, len(order), config.warmup_ratio, config.learning_rate)
    net, opt_state, loss = step_fn(base, params["net"], opt_state, params["inputs"],
                                   embeddings[users], stacked, real, user_keys, np.float32(lr))
    params = {"inputs": params["inputs"], "net": net}
    losses.append(float(loss))
    report = dataclasses.replace(
        report, steps_done=n + 1, users_done=len(plans) if n + 1 == len(order) else 0,
        tokens=int(sum(r["attention_mask"].sum() for r in rows[:len(pairs)])),
        computed=len(pairs) * stacked["attention_mask"][0].size)
    if progress is not None:
      progress(report)
  return jax.tree.map(np.asarray, params), losses


def _step(graphdef, peft, hyper, tx, base, net, opt_state, inputs, embeddings, batches, real,
          keys, lr):
  """One update of the network: the mean over the step's real users of each user's loss under
  its generated adapter. Each user's gradient is taken inside the loop over users, so only one
  user's activations are alive at a time (as the multi-user trainer does on a CPU); an idle row
  skips its work."""
  def user_grads(embedding, batch, key):
    def loss(net):
      adapter = hyper.generate({"inputs": inputs, "net": net}, embedding)
      total, weight = loss_terms(graphdef, peft, adapter, base, batch, key)
      return total / jnp.maximum(weight, 1.0)
    return jax.value_and_grad(loss)(net)

  def idle(*_):
    return jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, net)

  def one_user(carry, xs):
    embedding, batch, key, is_real = xs
    loss, grads = jax.lax.cond(is_real, user_grads, idle, embedding, batch, key)
    loss_sum, grad_sum = carry
    return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

  zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, net))
  (loss_sum, grad_sum), _ = jax.lax.scan(one_user, zeros, (embeddings, batches, keys, real))
  users = jnp.maximum(jnp.sum(real), 1).astype(jnp.float32)
  grads = jax.tree.map(lambda g: g / users, grad_sum)
  updates, opt_state = tx.update(grads, opt_state, net)
  net = jax.tree.map(lambda p, u: p - lr * u, net, updates)
  return net, opt_state, loss_sum / users
