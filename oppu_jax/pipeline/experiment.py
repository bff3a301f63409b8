"""What every stage of a run reads (`Experiment`, built once by `setup`), and where each output
lives in the workdir: predictions/<setting>.json, adapters/<setting>/<user>/,
checkpoints/task_<base>."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from oppu_jax import config as config_lib, files, storage
from oppu_jax.data import lamp, synth
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.types import User
from oppu_jax.models import load
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.peft import method as method_lib
from oppu_jax.pipeline import cluster, examples, profile_writer, workdir as wd
from oppu_jax.pipeline.settings import STUDY, Setting, parse_settings

BASE_VARIANTS = ("B", "R", "P")  # the order of the work; see settings.py
UPDATED_VERSION = "v2"  # adapters/<setting>/<user>/v2: the update of config.continual.since


@dataclasses.dataclass
class Experiment:
  """What every stage reads, built once by `setup`."""

  config: Any  # ml_collections.ConfigDict
  workdir: str
  task: tasks_lib.Task
  settings: list[Setting]
  test_users: tuple[User, ...]  # the N most active users: one adapter each
  other_users: tuple[User, ...]  # the rest: task adaptation
  tokenizer: Tokenizer
  base_model: Any  # the plain LLM
  profiles: dict[str, str]  # user id -> profile text, where a setting or variant P needs them
  data: Any = None  # the LampData of every user
  mesh: Any = None  # over every device of every process (task adaptation's data parallelism)
  local_mesh: Any = None  # this process's devices of it (its users' adapters and queries)
  retrievers: examples.Retrievers = examples.Retrievers()  # dense / RSPG, built when needed
  # What a stage computes once per run for the later ones, under its module's key (shift.py's
  # cut histories and their profiles).
  memo: dict = dataclasses.field(default_factory=dict)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  @property
  def show_progress(self) -> bool:
    return self.config.progress and cluster.is_main()


def setup(config, workdir: str) -> Experiment:
  """Checks the config, the data, the tokenizer and the base model, then claims the workdir (so a
  typo in a path leaves no trace there) and generates the data if no path was given (the
  profiles are the next stage's: pag.ensure_profiles)."""
  config_lib.check(config)
  method_lib.get(config.peft.method)  # the registry knows the methods: fail before any work
  settings = parse_settings(config.settings)
  task = tasks_lib.get_task(config.task)
  given = _given_data(config, task)
  tokenizer = load_tokenizer(config)
  base_model = load_model(config)
  if needs_profiles(settings) and not (
      given is not None and all(u.id in given.profiles for u in given.users)):
    profile_writer.check(config, tokenizer)  # the base would write them: it needs a template
  if cluster.is_main():
    wd.claim(workdir, config.to_dict(), config.overwrite)
  cluster.barrier("claimed")
  data = given if given is not None else _generated_data(config, workdir, task)
  test, others = lamp.select_users(data, config.data.num_test_users, config.data.test_users)
  if config.data.max_task_users:
    others = lamp.select_users(others, config.data.max_task_users)[0]
  logging.info("%s: %d test users (%d queries), each with an adapter per personalized setting; "
               "%d other users (task adaptation%s, RSPG's training split)", task.name,
               len(test.users), sum(len(u.queries) for u in test.users), len(others.users),
               "" if config.task_adapt.enabled else " is off")
  mesh, local_mesh = cluster.meshes(config.mesh.users, config.mesh.model)
  exp = Experiment(config, workdir, task, settings, test.users, others.users, tokenizer,
                   base_model, {}, data=data, mesh=mesh, local_mesh=local_mesh)
  return exp


def needs_profiles(settings) -> bool:
  """Whether a setting reads PAG profiles: in its prompt, or through its base (variant P)."""
  return any(s.profile or s.base == "P" for s in settings)


def golds(users) -> dict[str, str]:
  """{query id: gold} of the queries of `users` that have one (a split released without golds,
  as LaMP's test split, has none): what every score is computed against."""
  return {q.id: q.gold for u in users for q in u.queries if q.gold is not None}


def base_of(exp: Experiment, setting: Setting) -> str:
  """The task-adapted base `setting` is evaluated on: "B", or "R" / "P" trained with
  config.task_adapt.k retrieved items; with config.task_adapt.per_k, "R<k>" / "P<k>" trained with
  the setting's own k, as the paper's Θ^(R) takes the top-k (checkpoints/task_<base>)."""
  if setting.base == "B" or not exp.config.task_adapt.per_k:
    return setting.base
  return f"{setting.base}{setting.k}"


def predictions_path(exp: Experiment, setting: Setting) -> str:
  return exp.path("predictions", f"{setting.name}.json")


def adapter_dir(exp: Experiment, setting: Setting, user_id: str) -> str:
  """The directory of the adapter `setting` plugs in for `user_id`: under config.continual.since, an
  OPPU-trained adapter's updated version (pipeline/update.py), inside the original's directory."""
  path = exp.path("adapters", setting.adapter_setting, user_id)
  updating = exp.config.continual.since or exp.config.continual.last_items
  if updating and adapter_owner(setting).adapter_source == "train":
    path = os.path.join(path, UPDATED_VERSION)
  return path


def adapter_owner(setting: Setting) -> Setting:
  """The setting that trains the adapters `setting` plugs in (itself, or the one it reuses)."""
  return STUDY[setting.adapters_of] if setting.adapters_of else setting


def peft_config(exp: Experiment, setting: Setting):
  """config.peft with the setting's own LoRA rank (the study's r = 8..64) and PEFT method, if it
  has them."""
  peft = exp.config.peft
  if not (setting.rank or setting.method):
    return peft
  peft = peft.copy_and_resolve_references()
  peft.rank = setting.rank or peft.rank
  peft.method = setting.method or peft.method
  return peft


def _given_data(config, task):
  """The LaMP data at config.data.path (its configured splits), or None to generate it."""
  path = input_path(config, config.data.path)
  return _load_data(config, path, task) if path else None


def _generated_data(config, workdir: str, task):
  """LaMP-format data generated into the workdir once (process 0), then read like a release."""
  path = os.path.join(workdir, "data")
  if cluster.is_main() and not files.is_done(path):
    with files.output(path) as tmp:
      synth.generate(task.name, tmp, seed=config.seed, **config.data.synth.to_dict())
    logging.info("generated LaMP-format %s data into %s", task.name, path)
  cluster.barrier("data")
  return _load_data(config, path, task)


def _load_data(config, path: str, task):
  splits = [s.strip() for s in config.data.split.split(",") if s.strip()] or None
  return lamp.load(path, task, format=config.data.format, split=splits,
                   max_words=config.data.max_words)


def input_path(config, path: str) -> str:
  """A data or model path as a local path (a store URL is fetched once into the cache)."""
  return storage.local_copy(path, config.storage.cache)


def load_tokenizer(config) -> Tokenizer:
  """The run's tokenizer: config.model.tokenizer, else the model's own."""
  return Tokenizer.for_model(input_path(config, config.model.path),
                             input_path(config, config.model.tokenizer))


def load_model(config, path: str | None = None):
  """The model at `path` (default: config.model.path) in the run's dtypes and backend."""
  path = config.model.path if path is None else path
  model, _ = load.load_model(input_path(config, path) or None,
                             backend=config.model.backend,
                             param_dtype=config.model.param_dtype,
                             compute_dtype=config.model.compute_dtype, remat=config.model.remat)
  return model


def record_cost(exp: Experiment, name: str, seconds: float, users: int) -> None:
  """costs.json: {name: {seconds, users, seconds_per_user}} of the adapters this process made
  in this invocation (a resumed run records the users it made then); `name` is the adapter
  setting's, or for an update (pipeline/update.py) "<setting> v1" / "<setting> update"."""
  if not users:
    return
  path = exp.path("costs.json")
  path = path if cluster.count() == 1 else cluster.part_path(path)
  costs = {}
  if os.path.exists(path):
    with open(path) as f:
      costs = json.load(f)
  costs[name] = {"seconds": round(seconds, 2), "users": users,
                 "seconds_per_user": round(seconds / users, 3)}
  files.write_json(path, costs)


def join_costs(exp: Experiment) -> None:
  """Of several processes, process 0 merges their costs parts into costs.json after the barrier
  that follows the work (processes work side by side: the slowest one's seconds count, the
  users add up) and removes the parts."""
  if cluster.count() == 1 or not cluster.is_main():
    return
  path = exp.path("costs.json")
  costs = {}
  if os.path.exists(path):
    with open(path) as f:
      costs = json.load(f)
  parts = [p for p in cluster.part_paths(path) if os.path.exists(p)]
  joined = {}
  for part in parts:
    with open(part) as f:
      for name, c in json.load(f).items():
        seconds = max(joined.get(name, {}).get("seconds", 0.0), c["seconds"])
        users = joined.get(name, {}).get("users", 0) + c["users"]
        joined[name] = {"seconds": seconds, "users": users,
                        "seconds_per_user": round(seconds / users, 3)}
  if parts:
    files.write_json(path, {**costs, **joined})
    cluster.remove_parts(path)
