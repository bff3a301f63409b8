"""Continual updates (`--config.continual.since=<date>`, or `--config.continual.last_items=N`): a
user's adapter follows its growing history without retraining from scratch.

For each OPPU-trained setting, a user's history splits at `since` (or before its last N items):
version 1 is its adapter trained on the older items (the history as it was), saved as usual in
adapters/<setting>/<user>/ with its optimizer state (optimizer.npz, written after the adapter's
files, so its presence means both are there); version 2 continues version 1 from that optimizer
state (without warm-up by default: its moments are warm) on the new items only (their training
pairs as OPPU builds them, retrieval seeing every earlier item), and is written beside it in
adapters/<setting>/<user>/v2/. Version 1 is never written again; the setting's predictions use
version 2. A user without new items keeps version 1 as version 2 (copied); a user without old
items trains version 2 from a fresh adapter. costs.json records the cost per user of each
version apart, beside what a run without an update pays to train on the whole history.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time

import jax
import numpy as np

from oppu_jax import files, storage
from oppu_jax.data.types import date_key
from oppu_jax.errors import ConfigError, DataError
from oppu_jax.peft import hf_format
from oppu_jax.pipeline.experiment import Experiment, adapter_dir, record_cost
from oppu_jax.pipeline.settings import Setting

OPTIMIZER = "optimizer.npz"


def enabled(exp: Experiment, setting: Setting) -> bool:
  """Whether `setting`'s adapters are versioned by config.continual (OPPU-trained ones)."""
  u = exp.config.continual
  return bool(u.since or u.last_items) and setting.adapter_source == "train"


def since_key(exp: Experiment) -> tuple[int, ...]:
  key = date_key(exp.config.continual.since)
  if key is None:
    raise ConfigError(f"config.continual.since: {exp.config.continual.since!r} is no date "
                      "(e.g. 2018-06-01)")
  return key


def split(exp: Experiment, user) -> tuple[list[int], list[int]]:
  """(indices of the items dated before `since`, indices of those at or after it); with
  config.continual.last_items = N instead, (all but the last N, the last N)."""
  n = len(user.history)
  if not exp.config.continual.since:
    cut = max(n - exp.config.continual.last_items, 0)
    return list(range(cut)), list(range(cut, n))
  since = since_key(exp)
  old, new = [], []
  for i, item in enumerate(user.history):
    when = date_key(item.get("date"))
    if when is None:
      raise DataError(f"user {user.id!r}: history item {item.get('id', i)!r} has no date; "
                      "config.continual.since needs every item dated")
    (new if when >= since else old).append(i)
  return old, new


def train_updated_adapters(exp: Experiment, model, setting: Setting, users) -> None:
  """Version 1 (where missing) on the old items, then version 2 on the new ones."""
  from oppu_jax.pipeline import examples, training  # (training imports this module)
  from oppu_jax.pipeline.pag import profiles_for
  from oppu_jax.train import multi_user

  c = exp.config
  parts = {u.id: split(exp, u) for u in users}
  before = [dataclasses.replace(u, history=tuple(u.history[i] for i in parts[u.id][0]))
            for u in users if parts[u.id][0]]
  v1 = [u for u in before
        if not files.is_done(os.path.join(_v1_dir(exp, setting, u.id), OPTIMIZER))]
  logging.info("%s: update (%s): %d users' version 1 to train (old items), %d users with new "
               "items", setting.name, c.continual.since or f"last {c.continual.last_items} items",
               len(v1), sum(bool(parts[u.id][1]) for u in users))
  start = time.perf_counter()
  training.train_and_save(exp, model, setting, training.user_plans(exp, setting, v1),
                          lambda uid: _v1_dir(exp, setting, uid), keep_optimizer=True,
                          desc=f"stage 2: {setting.name} adapters, version 1")
  record_cost(exp, f"{setting.adapter_setting} v1", time.perf_counter() - start, len(v1))
  start = time.perf_counter()
  profiles = profiles_for(exp, setting)
  plans, starts = [], {}
  table = model.weight_table()
  for u in users:
    old, new = parts[u.id]
    if not new:  # nothing to learn: version 2 is version 1
      _copy_files(_v1_dir(exp, setting, u.id), adapter_dir(exp, setting, u.id))
      continue
    pairs = examples.user_training_pairs(
        exp.task, u, setting, profiles.get(u.id), seed=c.seed,
        history_mode=setting.history_mode or c.data.history_mode)
    plans.append(training.make_plan(exp, u.id, [pairs[i] for i in new], c.train.batch_size,
                                    c.continual.epochs or c.train.epochs, c.train.grad_accum))
    if old:
      directory = _v1_dir(exp, setting, u.id)
      _, adapter = hf_format.load_adapter(directory, table, model.config)
      tx = multi_user.optimizer(training.train_config(exp, c.train.learning_rate, c.train.slots))
      like = jax.eval_shape(tx.init, adapter)  # the tree only: nothing allocated
      starts[u.id] = multi_user.Start(adapter, load_optimizer(directory, like))
  training.train_and_save(exp, model, setting, plans,
                          lambda uid: adapter_dir(exp, setting, uid), keep_optimizer=True,
                          initial=starts.get, desc=f"stage 2: {setting.name} adapters, update",
                          config_changes={"warmup_ratio": c.continual.warmup_ratio})
  record_cost(exp, f"{setting.adapter_setting} update", time.perf_counter() - start, len(users))


def _v1_dir(exp: Experiment, setting: Setting, user_id: str) -> str:
  return os.path.dirname(adapter_dir(exp, setting, user_id))


def _copy_files(source: str, target: str) -> None:
  """The files of `source` (not its subdirectories: version 2 itself) as `target`, whole."""
  names = [n for n in os.listdir(source) if os.path.isfile(os.path.join(source, n))]
  with files.output(target) as tmp:
    os.makedirs(tmp)
    for name in names:
      shutil.copy2(os.path.join(source, name), os.path.join(tmp, name))


def save_optimizer(directory: str, opt_state) -> None:
  """The optimizer state's leaves, in tree order, as directory/optimizer.npz (written whole)."""
  leaves = jax.tree.leaves(opt_state)
  path = os.path.join(directory, OPTIMIZER)
  with files.output(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, *[np.asarray(x) for x in leaves])
  storage.push(path)


def load_optimizer(directory: str, like):
  """The optimizer state save_optimizer wrote, in the tree of `like` (a state, or its shapes)."""
  path = os.path.join(directory, OPTIMIZER)
  if not os.path.exists(path):
    raise DataError(f"{path}: missing; version 1 was trained without config.continual, so it "
                    "kept no optimizer state to continue from")
  structure = jax.tree.structure(like)
  with np.load(path) as z:
    if len(z.files) != structure.num_leaves:
      raise DataError(f"{path}: {len(z.files)} arrays; this optimizer has "
                      f"{structure.num_leaves} (config.train changed since version 1?)")
    return jax.tree.unflatten(structure, [z[f"arr_{i}"] for i in range(len(z.files))])
