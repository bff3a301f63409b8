"""A finished run's workdir as a service: its task-adapted base, rebuilt from the run's config and
checkpoint exactly as the evaluation used it, and its users' adapters of one setting
(`adapters/<setting>/<user_id>/`, HF PEFT), read when first asked for."""

from __future__ import annotations

import json
import os

import ml_collections

from oppu_jax import config as config_lib, files
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.errors import ConfigError, WorkdirError
from oppu_jax.peft import hf_format, stack
from oppu_jax.pipeline import experiment, training
from oppu_jax.pipeline.settings import parse_settings
from oppu_jax.serve.app import Service
from oppu_jax.serve.engine import Engine, EngineConfig
from oppu_jax.serve.residency import AdapterTiers, host_adapter

NO_LIMIT = 1 << 30  # prompts are not cut to the run's cutoff: a prompt too long is refused


def open_workdir(workdir: str, setting_name: str, engine_config: EngineConfig, *,
                 device_slots: int, host_capacity: int) -> Service:
  """The service of `setting_name`'s personal models in a finished run's workdir (not started)."""
  config = run_config(workdir)
  settings = parse_settings(setting_name)
  if len(settings) != 1 or not settings[0].personal:
    raise ConfigError(f"--setting={setting_name}: name one personalized setting (e.g. oppu_k0)")
  setting = settings[0]
  task = tasks_lib.get_task(config.task)
  tokenizer = experiment.load_tokenizer(config)
  exp = experiment.Experiment(config, workdir, task, settings, (), (), tokenizer,
                              experiment.load_model(config), {})
  model = _task_adapted(exp, setting)
  root = exp.path("adapters", setting.adapter_setting)
  users = _users(root)
  if not users:
    raise WorkdirError(f"{root}: no user adapters; run the pipeline with --config.settings="
                       f"{setting_name} first")
  table = model.weight_table()
  # (adapter_dir: the newest version of a user's adapter, under config.continual its update)
  where = lambda user: experiment.adapter_dir(exp, setting, user)
  method, first = hf_format.load_adapter(where(users[0]), table, model.config)
  # As the pipeline predicts: at config.eval.adapter_scale of their strength.
  strength = lambda adapter: stack.scaled(method, adapter, config.eval.adapter_scale)
  read = lambda user: host_adapter(strength(
      hf_format.load_adapter(where(user), table, model.config)[1]))
  first = strength(first)
  tiers = AdapterTiers(method, host_adapter(first), read,
                       device_slots=device_slots, host_capacity=host_capacity)
  engine = Engine(model, tiers, engine_config, eos_id=tokenizer.eos_id,
                  pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id)
  conventions = model.conventions
  return Service(
      engine=engine, setting=setting.name, users=lambda: _users(root),
      has_user=lambda user: _safe(user) and os.path.isdir(os.path.join(root, user)),
      encode_prompt=lambda text: conventions.query(text, tokenizer, NO_LIMIT, 0),
      encode_choice=lambda label: conventions.choice(label, tokenizer),
      decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
      chat=(lambda messages: tokenizer.apply_chat_template(messages))
      if tokenizer.has_chat_template else None,
      labels=tuple(task.labels or ()))


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a finished run was made with (its config.json), checked."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir}: no config.json; serve the workdir of a finished run")
  with open(path) as f:
    # Keys added to the config since the run was made take their defaults.
    config = ml_collections.ConfigDict(_merged(config_lib.get_config().to_dict(), json.load(f)))
  config_lib.check(config)
  return config


def _merged(defaults: dict, given: dict) -> dict:
  return {**defaults, **{k: _merged(defaults[k], v) if isinstance(v, dict) and isinstance(
      defaults.get(k), dict) else v for k, v in given.items()}}


def _task_adapted(exp, setting):
  """The base the setting was evaluated on: the run's task-adaptation LoRA merged (never trained
  here: a missing checkpoint is an error)."""
  if not exp.config.task_adapt.enabled:
    return exp.base_model
  checkpoint = exp.path("checkpoints", f"task_{experiment.base_of(exp, setting)}")
  if not files.is_done(checkpoint):
    raise WorkdirError(f"{checkpoint}: missing; the run has not finished task adaptation")
  return training.merge_task_lora(exp, os.path.abspath(checkpoint))


def _users(root: str) -> list[str]:
  if not os.path.isdir(root):
    return []
  return sorted(u for u in os.listdir(root) if files.is_done(os.path.join(root, u))
                and not u.endswith(".tmp"))


def _safe(user: str) -> bool:
  """A user id that names a directory entry, not a path (no "..", no "/")."""
  return bool(user) and user not in (".", "..") and "/" not in user and "\\" not in user
