"""The two training stages: task adaptation (a LoRA on the other users' queries, merged into the
base) and one PEFT per test user on its own history, both through the multi-user trainer."""

from __future__ import annotations

import logging
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from oppu_jax import files, storage
from oppu_jax.errors import DataError
from oppu_jax.peft import hf_format, method as method_lib
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.merge import merge
from oppu_jax.pipeline import cluster, examples, hyper, progress, update
from oppu_jax.pipeline.experiment import (Experiment, adapter_dir, join_costs, peft_config,
                                          record_cost)
from oppu_jax.pipeline.pag import profiles_for
from oppu_jax.pipeline.settings import Setting
from oppu_jax.pipeline.shift import users_of
from oppu_jax.train import multi_user, preemption
from oppu_jax.train.user_batches import plan_user


def adapt_to_task(exp: Experiment, base: str):
  """The base LLM adapted to the task (`base_of`: variant B, R or P, with its k if it names one):
  a LoRA trained on the other users' queries, then merged into the base weights, as the paper
  does."""
  ta = exp.config.task_adapt
  if not ta.enabled:
    return exp.base_model
  checkpoint = os.path.abspath(exp.path("checkpoints", f"task_{base}"))
  if files.is_done(checkpoint):
    logging.info("task adaptation %s: restored from %s", base, checkpoint)
    return merge_task_lora(exp, checkpoint)
  plan = task_adaptation_plan(exp, base)
  # Preemption checkpoints beside the final one; a rerun resumes from the latest.
  steps = preemption.StageCheckpoints(f"{checkpoint}.steps", ta.checkpoint_every,
                                      on_saved=storage.push)
  result = _train(exp, exp.base_model, task_lora(exp), [plan], ta.learning_rate, 1,
                  f"stage 1: task adaptation ({base})", mesh=exp.mesh, data_parallel=True,
                  checkpoints=steps)[plan.user_id]
  steps.close()
  logging.info("task adaptation %s: %d pairs, %d steps, loss %.3f -> %.3f", base,
               len(plan.examples),
               plan.total_steps, np.mean(result.losses[:3]), np.mean(result.losses[-3:]))
  model = merge_task_lora(exp, checkpoint, result.adapter)
  cluster.barrier(f"task_{base} saved")
  if cluster.is_main():  # the final checkpoint is there: the preemption ones are not needed
    storage.remove(f"{checkpoint}.steps")
    shutil.rmtree(f"{checkpoint}.steps", ignore_errors=True)
  return model


def train_user_adapters(exp: Experiment, model, setting: Setting) -> None:
  """One PEFT per test user on its own history; each adapter is saved as soon as it is done."""
  users = users_of(exp, setting)
  todo = [u for u in users if not files.is_done(adapter_dir(exp, setting, u.id))]
  if len(todo) < len(users):
    logging.info("%s: %d of %d user adapters already trained", setting.name,
                 len(users) - len(todo), len(users))
  if not todo:
    return
  logging.info("%s: %d users, one adapter each", setting.name, len(todo))
  cold = cold_users(exp, setting, todo)
  if setting.adapter_source in ("hyper", "warm") or (
      cold and exp.config.cold_start.adapter == "hyper"):
    # In every process, before the users are shared out (its training ends at a barrier); its
    # one-time cost is not a user's.
    hyper.network(exp, model, setting)
  # Each process trains its share (balanced by history size: training steps) on its own devices.
  mine = cluster.share(todo, cost=lambda u: len(u.history))
  if cluster.count() > 1:
    cluster.log_share(f"{setting.name}: trains the adapters of", [u.id for u in mine])
  if [u for u in mine if u in cold]:
    hyper.cold_start_adapters(exp, model, setting, [u for u in mine if u in cold])
    mine = [u for u in mine if u not in cold]
  start = time.perf_counter()
  if setting.adapter_source == "hyper":
    hyper.generate_user_adapters(exp, model, setting, mine)
  elif update.enabled(exp, setting):  # (its versions record their own costs)
    update.train_updated_adapters(exp, model, setting, mine)
  else:
    _train_adapters(exp, model, setting, mine)
  if not update.enabled(exp, setting):
    record_cost(exp, setting.adapter_setting, time.perf_counter() - start, len(mine))
  cluster.barrier(f"{setting.name} adapters")
  join_costs(exp)


def cold_users(exp: Experiment, setting: Setting, users) -> list:
  """The users of an OPPU-trained setting that get a cold-start adapter instead of training:
  at most config.cold_start.max_items history items."""
  if setting.adapter_source == "hyper":
    return []
  return [u for u in users if len(u.history) <= exp.config.cold_start.max_items]


def _train_adapters(exp: Experiment, model, setting: Setting, todo) -> None:
  if not todo:
    return
  initial, epochs = None, 0
  if setting.adapter_source == "warm":  # each user starts from its generated adapter
    generated = hyper.generated_adapters(exp, model, setting, todo)
    initial = lambda user_id: multi_user.Start(generated[user_id])
    epochs = exp.config.hyper.warm_epochs
  train_and_save(exp, model, setting, user_plans(exp, setting, todo, epochs=epochs),
                 lambda user_id: adapter_dir(exp, setting, user_id), initial=initial)


def train_and_save(exp: Experiment, model, setting: Setting, plans, directory_of, *,
                   initial=None, keep_optimizer: bool = False, desc: str = "",
                   config_changes: dict | None = None) -> None:
  """Trains `plans` (one per user) and saves each adapter to `directory_of(user id)` as soon as it
  is done (with `keep_optimizer`, its optimizer state beside it: update.py continues from it);
  `config_changes` change the trainer's config (update.py's warm-up)."""
  if not plans:
    return
  c = exp.config
  method = build_method(exp, model, setting)

  def save(result):
    directory = directory_of(result.user_id)
    hf_format.save_adapter(directory, method, result.adapter, model.weight_table(),
                           model_config=model.config)
    if keep_optimizer:
      update.save_optimizer(directory, result.opt_state)
    storage.push(directory)

  _train(exp, model, method, plans, c.train.learning_rate, c.train.slots,
         desc or f"stage 2: {setting.name} adapters", config_changes, on_user_done=save,
         mesh=exp.local_mesh, initial=initial)


def task_adaptation_plan(exp: Experiment, base: str):
  """The trainer's plan of base variant `base`'s task adaptation: the other users' queries."""
  ta = exp.config.task_adapt
  k = int(base[1:]) if base[1:] else ta.k
  pairs = examples.task_adaptation_pairs(exp.task, exp.other_users, base[0], k, exp.profiles,
                                         seed=exp.config.seed)
  if not pairs:
    raise DataError("task adaptation has no training pairs: the non-test users have no queries "
                    "with golds (set config.task_adapt.enabled=False to skip it)")
  return make_plan(exp, f"task_{base}", pairs, ta.batch_size,
                   task_adaptation_epochs(ta.epochs, ta.min_steps, len(pairs), ta.batch_size))


def task_adaptation_epochs(epochs: int, min_steps: int, pairs: int, batch_size: int) -> int:
  """`epochs`, or more whole epochs if they make fewer than `min_steps` optimizer steps (a train
  split of 64 pairs is 8 steps at 2 epochs of 16: too few for the base to learn the task)."""
  per_epoch = -(-pairs // batch_size)
  return max(epochs, -(-min_steps // per_epoch))


def user_plans(exp: Experiment, setting: Setting, users, epochs: int = 0) -> list:
  """The trainer's plan of each of `users`: its own history under `setting` (`epochs`, else
  config.train.epochs)."""
  c = exp.config
  profiles = profiles_for(exp, setting)
  return [make_plan(exp, u.id, examples.user_training_pairs(
              exp.task, u, setting, profiles.get(u.id), seed=c.seed,
              history_mode=setting.history_mode or c.data.history_mode), c.train.batch_size,
              epochs or c.train.epochs, c.train.grad_accum)
          for u in users]


def build_method(exp: Experiment, model, setting: Setting):
  """The PEFT method the setting's adapters use (config.peft with the setting's changes)."""
  return method_lib.build(peft_config(exp, setting), table=model.weight_table(),
                          encode=exp.tokenizer.encode, instruction=exp.task.description)


def make_plan(exp: Experiment, plan_id: str, pairs, batch_size: int, epochs: int,
              grad_accum: int = 1):
  """(prompt, answer) pairs -> the trainer's plan, each pair encoded as the base's family trains
  (`conventions.example`; an empty prompt is next-token on the answer)."""
  conventions, cutoff = exp.base_model.conventions, exp.config.model.cutoff
  encoded = [conventions.example(p, a, exp.tokenizer, cutoff) for p, a in pairs]
  return plan_user(plan_id, encoded, batch_size=batch_size, epochs=epochs, grad_accum=grad_accum,
                   seq_buckets=tuple(exp.config.model.seq_buckets),
                   target_buckets=tuple(exp.config.model.target_buckets))


def task_lora(exp: Experiment) -> Lora:
  """The task-adaptation LoRA of config.task_adapt (the paper's: q, k, v)."""
  return Lora.from_config(exp.config.task_adapt, method_lib.BuildContext(
      table=exp.base_model.weight_table(), key="config.task_adapt"))


def merge_task_lora(exp: Experiment, checkpoint: str, adapter=None):
  """Saves `adapter` to the orbax checkpoint (or restores it from there) and merges it."""
  # Host (numpy) arrays, the same in every process: orbax writes them once, from process 0.
  lora, checkpointer = task_lora(exp), ocp.StandardCheckpointer()
  if adapter is None:
    like = lora.init(exp.base_model.weight_table(), jax.random.PRNGKey(0))
    adapter = checkpointer.restore(checkpoint, jax.tree.map(np.asarray, like))
  else:
    checkpointer.save(checkpoint, jax.tree.map(np.asarray, adapter))
    checkpointer.wait_until_finished()
    if cluster.is_main():
      storage.push(checkpoint)
  return merge(exp.base_model, lora, jax.tree.map(jnp.asarray, adapter))


def train_config(exp: Experiment, learning_rate: float, slots: int,
                 **changes) -> multi_user.TrainConfig:
  """config.train at a stage's learning rate and slots, as the trainer takes it."""
  t = exp.config.train
  return multi_user.TrainConfig(**{
      **dict(learning_rate=learning_rate, weight_decay=t.weight_decay, clip_norm=t.clip_norm,
             warmup_ratio=t.warmup_ratio, slots=slots, seed=exp.config.seed, remat=t.remat,
             memory_budget_gb=t.memory_budget_gb, users_per_pass=t.users_per_pass,
             schedule=t.schedule), **changes})


def _train(exp: Experiment, model, method, plans, learning_rate: float, slots: int, desc: str,
           config_changes: dict | None = None, **kw):
  """Both training stages: config.train at the stage's rate and slots (and `config_changes`),
  with a progress bar."""
  total = sum(p.total_steps for p in plans)
  config = train_config(exp, learning_rate, slots, **(config_changes or {}))
  with progress.bar(desc, total, "steps", exp.show_progress) as bar:
    return multi_user.train_users(model, method, plans, config, progress=bar, **kw)
