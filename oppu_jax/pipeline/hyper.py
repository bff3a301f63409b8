"""The hypernetwork settings: hyper_k0 (each test user's adapter generated in one forward pass, no
training) and oppu_warm_k0 (OPPU's training started from that adapter).

The network (peft/hyper.py) is trained once per run and base variant on the histories of the
other users, never on a test user's, and saved to checkpoints/hyper_<base>; a test user's adapter
is a function of that network and of the user's own embedding only (per item field, the mean of
the embedded MiniLM's embeddings of its history's values: `user_embeddings`). A user without
history (cold start) gets the training users' mean embedding: the average user's adapter.
experiment.record_cost keeps what each adapter source cost per user (costs.json), hyper_<base>.json
the network's one-time training.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from oppu_jax import files, storage
from oppu_jax.errors import DataError
from oppu_jax.peft import hf_format
from oppu_jax.peft.hyper import Hypernetwork
from oppu_jax.pipeline import cluster, progress
from oppu_jax.pipeline.experiment import Experiment, adapter_dir, base_of, record_cost
from oppu_jax.pipeline.settings import SETTINGS, Setting
from oppu_jax.train import hyper as hyper_train

_ENCODER = "hyper.encoder"  # exp.memo keys
_NETWORK = "hyper.network"
# The training users' pairs: OPPU's own (its k = 0 setting), so the network learns what the
# users' adapters learn.
TRAINING_SETTING = SETTINGS["oppu_k0"]


def user_embeddings(exp: Experiment, users) -> np.ndarray:
  """[len(users), fields x E]: per item field (the task's `item_fields`: a review's text and its
  score, a movie's description and its tag), the mean MiniLM embedding of the user's values of
  that field, concatenated. Field by field, so the answers a user gives (a few tokens, lost in
  one embedding of the whole item) weigh as much as what the items are about. NaN rows for users
  without history: the network substitutes its training users' mean."""
  encoder = exp.memo.get(_ENCODER)
  if encoder is None:
    from oppu_jax.models import bert

    encoder = exp.memo[_ENCODER] = bert.DenseEncoder(exp.config.retrieval.dense_model)
  fields = exp.task.item_fields
  width = encoder.model.config.hidden_size * len(fields)
  out = []
  for user in users:
    if not user.history:
      out.append(np.full(width, np.nan, np.float32))
      continue
    out.append(np.concatenate([encoder.embed([str(item[f]) for item in user.history]).mean(0)
                               for f in fields]))
  return np.stack(out).astype(np.float32)


def network(exp: Experiment, model, setting: Setting):
  """(the network's jitted `generate`, its params, the PEFT method): trained on the other users'
  histories through `model` (the task-adapted base of `setting`), or restored from
  checkpoints/hyper_<base>."""
  from oppu_jax.pipeline import training  # (training imports this module for warm starts)

  base = base_of(exp, setting)
  if (base, id(model)) in exp.memo.get(_NETWORK, {}):
    return exp.memo[_NETWORK][(base, id(model))]
  c = exp.config
  hyper = Hypernetwork.from_config(c.hyper)
  method = training.build_method(exp, model, setting)
  # Every non-test user with a history (config.data.max_task_users caps task adaptation only).
  test = {u.id for u in exp.test_users}
  users = [u for u in exp.data.users if u.id not in test and u.history]
  if c.hyper.max_users:
    users = users[:c.hyper.max_users]
  if len(users) < 2:
    raise DataError(f"{setting.name}: the hypernetwork trains on the non-test users' histories; "
                    f"{len(users)} of them have one (at least 2 are needed)")
  start = time.perf_counter()  # the network's one-time cost: embedding its users, training it
  embeddings = user_embeddings(exp, users)
  table, embed = model.weight_table(), model.embed.get_value()
  params = hyper.init(lambda key: method.init(table, key, embed), embeddings,
                      jax.random.PRNGKey(c.seed))
  checkpoint = os.path.abspath(exp.path("checkpoints", f"hyper_{base}"))
  checkpointer = ocp.StandardCheckpointer()
  if files.is_done(checkpoint):
    logging.info("hypernetwork %s: restored from %s", base, checkpoint)
    params = checkpointer.restore(checkpoint, jax.tree.map(np.asarray, params))
  else:
    plans = training.user_plans(exp, TRAINING_SETTING, users)
    config = hyper_train.HyperTrainConfig(
        learning_rate=c.hyper.learning_rate, weight_decay=c.train.weight_decay,
        clip_norm=c.train.clip_norm, warmup_ratio=c.train.warmup_ratio,
        users_per_step=c.hyper.users_per_step, epochs=c.hyper.epochs, seed=c.seed)
    steps = len(hyper_train.steps_of(plans, config))
    with progress.bar(f"stage 2: hypernetwork ({base})", steps, "steps",
                      exp.show_progress) as bar:
      params, losses = hyper_train.train_hypernetwork(model, method, hyper, params, embeddings,
                                                      plans, config, progress=bar)
    seconds = time.perf_counter() - start
    logging.info("hypernetwork %s: %d training users, %d steps, loss %.3f -> %.3f, %.1f s", base,
                 len(users), steps, np.mean(losses[:5]), np.mean(losses[-5:]), seconds)
    if cluster.is_main():  # every process trained the same network (same data, config, seed)
      checkpointer.save(checkpoint, params)
      checkpointer.wait_until_finished()
      storage.push(checkpoint)
      files.write_json(exp.path(f"hyper_{base}.json"), {
          "training_users": len(users), "steps": steps, "seconds": round(seconds, 2),
          "loss_first_steps": float(np.mean(losses[:5])),
          "loss_last_steps": float(np.mean(losses[-5:]))})
    cluster.barrier(f"hyper_{base} saved")
  found = (jax.jit(hyper.generate), jax.tree.map(jnp.asarray, params), method)
  exp.memo.setdefault(_NETWORK, {})[(base, id(model))] = found
  return found


def generated_adapters(exp: Experiment, model, setting: Setting, users) -> dict:
  """{user id: the network's adapter (host arrays)} of `users`, each from its own embedding."""
  generate, params, _ = network(exp, model, setting)
  embeddings = user_embeddings(exp, users)
  mean = np.asarray(params["inputs"]["mean"])
  embeddings = np.where(np.isnan(embeddings), mean, embeddings)  # cold start: the average user
  return {u.id: jax.tree.map(np.asarray, generate(params, e)) for u, e in zip(users, embeddings)}


def generate_user_adapters(exp: Experiment, model, setting: Setting, users) -> None:
  """hyper_k0: each of `users` gets the network's adapter, saved as HF PEFT files."""
  _, _, method = network(exp, model, setting)
  with progress.bar(f"stage 2: {setting.name} adapters", len(users), "users",
                    exp.show_progress) as bar:
    for user in users:  # one at a time: the seconds per user are those of one new user
      adapter = generated_adapters(exp, model, setting, [user])[user.id]
      directory = adapter_dir(exp, setting, user.id)
      hf_format.save_adapter(directory, method, adapter, model.weight_table(),
                             model_config=model.config)
      storage.push(directory)
      bar.update(1)


def cold_start_adapters(exp: Experiment, model, setting: Setting, users) -> None:
  """Cold-start users of an OPPU-trained setting (too few history items to train on): each gets
  config.cold_start.adapter, saved where its trained adapter would be."""
  from oppu_jax.pipeline import training

  how = exp.config.cold_start.adapter
  logging.info("%s: %d cold-start users (at most %d history items) get the %s adapter: %s",
               setting.name, len(users), exp.config.cold_start.max_items, how,
               ", ".join(u.id for u in users))
  start = time.perf_counter()
  if how == "hyper":
    _, _, method = network(exp, model, setting)
    adapters = generated_adapters(exp, model, setting, users)
  else:
    method = training.build_method(exp, model, setting)
    fresh = method.init(model.weight_table(), jax.random.PRNGKey(exp.config.seed),
                        model.embed.get_value())
    adapters = {u.id: jax.tree.map(np.asarray, fresh) for u in users}
  for user in users:
    directory = adapter_dir(exp, setting, user.id)
    hf_format.save_adapter(directory, method, adapters[user.id], model.weight_table(),
                           model_config=model.config)
    storage.push(directory)
  record_cost(exp, f"{setting.adapter_setting} cold start", time.perf_counter() - start,
              len(users))
