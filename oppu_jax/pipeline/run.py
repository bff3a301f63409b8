"""The OPPU pipeline, as the paper's stages of one experiment: data -> profiles -> task
adaptation (per base variant) -> one PEFT per user -> evaluation -> report.

Every output is written whole and a stage whose output exists is skipped (oppu_jax/files.py),
so a killed run (kill -9 included) continues where it stopped and a rerun of a finished run only
reports. A user whose adapter was not yet written is trained again from scratch, which gives the
identical adapter (its batches, dropout and initialisation depend only on its data, the config
and the seed). Work is ordered by base variant, so only one task-adapted model is alive at a time.

Of several processes (`cluster.py`), each runs this same program: task adaptation is one
data-parallel job over all devices; users' adapters, predictions and profiles are shared out
between processes, each written once by its owner; process 0 writes the run's single files
between barriers. Every decision that starts collective work (which stage to run) is taken from
files all processes see after the same barrier.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from oppu_jax import config as config_lib, files, storage
from oppu_jax.data import lamp, lamp_write, synth
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.types import User
from oppu_jax.errors import ConfigError, DataError
from oppu_jax.eval import decode, metrics, profiles as profiles_lib, report
from oppu_jax.eval import score, significance
from oppu_jax.models import load
from oppu_jax.models.generate import Decoding
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.peft import hf_format, method as method_lib
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.merge import merge
from oppu_jax.peft.stack import UserAdapters
from oppu_jax.pipeline import cluster, examples, profile_writer, progress, workdir as wd
from oppu_jax.pipeline.settings import BEST, STUDY, Setting, parse_settings
from oppu_jax.train import multi_user, preemption
from oppu_jax.train.user_batches import plan_user

BASE_VARIANTS = ("B", "R", "P")  # the order of the work; see settings.py


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
  shifted: dict = dataclasses.field(default_factory=dict)  # behaviour shift: users, profiles

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  @property
  def show_progress(self) -> bool:
    return self.config.progress and cluster.is_main()


def run(config, workdir: str) -> dict:
  """Runs (or resumes) the configured experiment; returns {setting: {metric: value}}. The run
  holds the workdir's lock throughout (of a multi-process job, its first process)."""
  if config.analysis.name and cluster.count() > 1:
    raise ConfigError("config.analysis.name: the analyses run in one process; run them on the "
                      "finished workdir without config.distributed")
  # A gs:// (any store URL) workdir: the run works in a local mirror of it (storage.py).
  workdir = storage.attach(workdir, config.storage.cache, cluster.index())
  holds = wd.lock(workdir) if cluster.is_main() else contextlib.nullcontext()
  try:
    with holds:
      exp = setup(config, workdir)
      run_settings(exp, exp.settings)
      if config.analysis.name:
        from oppu_jax import analysis

        analysis.run(exp, config.analysis.name)
      return write_report(exp)
  finally:
    storage.detach(workdir)


def run_settings(exp: Experiment, settings) -> None:
  """Predictions for each of `settings` whose file is missing, training the adapters they need;
  analyses call it with their own settings (an existing output is never made twice)."""
  ensure_profiles(exp, settings)
  cluster.barrier("settings")  # every process decides on the same files
  for base in sorted({base_of(exp, s) for s in settings}, key=_work_order):
    todo = [s for s in settings
            if base_of(exp, s) == base and not files.is_done(_predictions(exp, s))]
    if todo:
      model = adapt_to_task(exp, base)  # dropped when this variant's settings are done
      for setting in todo:
        if setting.personal:  # a setting reusing another's adapters trains that one's
          train_user_adapters(exp, model, _adapter_owner(setting))
        evaluate(exp, model, setting)
      del model


def base_of(exp: Experiment, setting: Setting) -> str:
  """The task-adapted base `setting` is evaluated on: "B", or "R" / "P" trained with
  config.task_adapt.k retrieved items; with config.task_adapt.per_k, "R<k>" / "P<k>" trained with
  the setting's own k, as the paper's Θ^(R) takes the top-k (checkpoints/task_<base>)."""
  if setting.base == "B" or not exp.config.task_adapt.per_k:
    return setting.base
  return f"{setting.base}{setting.k}"


def _work_order(base: str) -> tuple[int, int]:
  return BASE_VARIANTS.index(base[0]), int(base[1:] or -1)


def setup(config, workdir: str) -> Experiment:
  """Checks the config, the data, the tokenizer and the base model, then claims the workdir (so a
  typo in a path leaves no trace there), generates the data if no path was given, and makes the
  profiles if a setting needs them."""
  config_lib.check(config)
  method_lib.get(config.peft.method)  # the registry knows the methods: fail before any work
  settings = parse_settings(config.settings)
  task = tasks_lib.get_task(config.task)
  given = _given_data(config, task)
  tokenizer = Tokenizer.for_model(_input(config, config.model.path),
                                  _input(config, config.model.tokenizer))
  base_model = _load_model(config)
  if _needs_profiles(settings) and not (
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
  if _needs_profiles(settings):
    ensure_profiles(exp, settings)
  return exp


def _needs_profiles(settings) -> bool:
  """Whether a setting reads PAG profiles: in its prompt, or through its base (variant P)."""
  return any(s.profile or s.base == "P" for s in settings)


def ensure_profiles(exp: Experiment, settings) -> None:
  """Every user's PAG profile (generated once, cached in profiles.json), if `settings` need it."""
  if exp.profiles or not _needs_profiles(settings):
    return
  c = exp.config
  given = profiles_lib.profiles_from_release(exp.data)
  if all(u.id in given for u in exp.data.users):  # the release's: no profile model needed
    exp.profiles = {u.id: given[u.id] for u in exp.data.users}
    return
  cache = exp.path("profiles.json")
  users = exp.data.users
  if cluster.count() > 1:  # each process writes its share into its part, from the joint cache
    part = cluster.part_path(cache)
    if files.is_done(cache) and not files.is_done(part):
      with files.output(part) as tmp:
        shutil.copyfile(cache, tmp)
    users = cluster.share(users, cost=lambda u: min(len(u.history), c.profile.num_items))
    cluster.log_share("PAG: writes the profiles of", [u.id for u in users])
    cache, users_cache = part, cache
  with _profile_writer(exp) as (model, tokenizer):
    make = lambda users, cache, advance=None: profiles_lib.user_profiles(
        model, tokenizer, exp.task, users, cache_path=cache, num_items=c.profile.num_items,
        decoding=Decoding(max_new_tokens=c.profile.max_new_tokens), seed=c.seed, given=given,
        progress=advance, mesh=exp.local_mesh)
    with progress.bar("PAG profiles", len(users), "users", exp.show_progress) as bar:
      exp.profiles = make(users, cache, bar.advance)
    if cluster.count() > 1:
      cluster.barrier("profiles written")
      if cluster.is_main():
        profiles_lib.join_caches(cluster.part_paths(users_cache), users_cache)
      cluster.barrier("profiles joined")
      exp.profiles = make(exp.data.users, users_cache)  # all cached: nothing generated


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
    return _merge_task_lora(exp, checkpoint)
  k = int(base[1:]) if base[1:] else ta.k
  pairs = examples.task_adaptation_pairs(exp.task, exp.other_users, base[0], k, exp.profiles,
                                         seed=exp.config.seed)
  if not pairs:
    raise DataError("task adaptation has no training pairs: the non-test users have no queries "
                    "with golds (set config.task_adapt.enabled=False to skip it)")
  plan = make_plan(exp, f"task_{base}", pairs, ta.batch_size, ta.epochs)
  # Preemption checkpoints beside the final one; a rerun resumes from the latest.
  steps = preemption.StageCheckpoints(f"{checkpoint}.steps", ta.checkpoint_every,
                                      on_saved=storage.push)
  result = _train(exp, exp.base_model, _task_lora(exp), [plan], ta.learning_rate, 1,
                  f"stage 1: task adaptation ({base})", mesh=exp.mesh, data_parallel=True,
                  checkpoints=steps)[plan.user_id]
  steps.close()
  logging.info("task adaptation %s: %d pairs, %d steps, loss %.3f -> %.3f", base, len(pairs),
               plan.total_steps, np.mean(result.losses[:3]), np.mean(result.losses[-3:]))
  model = _merge_task_lora(exp, checkpoint, result.adapter)
  cluster.barrier(f"task_{base} saved")
  if cluster.is_main():  # the final checkpoint is there: the preemption ones are not needed
    storage.remove(f"{checkpoint}.steps")
    shutil.rmtree(f"{checkpoint}.steps", ignore_errors=True)
  return model


def train_user_adapters(exp: Experiment, model, setting: Setting) -> None:
  """One PEFT per test user on its own history; each adapter is saved as soon as it is done."""
  users = users_of(exp, setting)
  todo = [u for u in users if not files.is_done(_adapter_dir(exp, setting, u.id))]
  if len(todo) < len(users):
    logging.info("%s: %d of %d user adapters already trained", setting.name,
                 len(users) - len(todo), len(users))
  if not todo:
    return
  logging.info("%s: %d users, one adapter each", setting.name, len(todo))
  # Each process trains its share (balanced by history size: training steps) on its own devices.
  mine = cluster.share(todo, cost=lambda u: len(u.history))
  if cluster.count() > 1:
    cluster.log_share(f"{setting.name}: trains the adapters of", [u.id for u in mine])
  _train_adapters(exp, model, setting, mine)
  cluster.barrier(f"{setting.name} adapters")


def _train_adapters(exp: Experiment, model, setting: Setting, todo) -> None:
  if not todo:
    return
  c = exp.config
  profiles = _profiles(exp, setting)
  plans = [make_plan(exp, u.id, examples.user_training_pairs(
               exp.task, u, setting, profiles.get(u.id), seed=c.seed,
               history_mode=setting.history_mode or c.data.history_mode), c.train.batch_size,
                 c.train.epochs, c.train.grad_accum)
           for u in todo]
  method = build_method(exp, model, setting)
  def save(result):
    directory = _adapter_dir(exp, setting, result.user_id)
    hf_format.save_adapter(directory, method, result.adapter, model.weight_table(),
                           model_config=model.config)
    storage.push(directory)

  _train(exp, model, method, plans, c.train.learning_rate, c.train.slots,
         f"stage 2: {setting.name} adapters", on_user_done=save, mesh=exp.local_mesh)


def build_method(exp: Experiment, model, setting: Setting):
  """The PEFT method the setting's adapters use (config.peft with the setting's changes)."""
  return method_lib.build(_peft_config(exp, setting), table=model.weight_table(),
                          encode=exp.tokenizer.encode, instruction=exp.task.description)


def users_of(exp: Experiment, setting: Setting) -> tuple[User, ...]:
  """The test users as `setting` sees them: under behaviour shift, each history cut to the items
  least similar to the user's queries (dense cosine; the same cut for training and retrieval)."""
  if setting.history != "shift":
    return exp.test_users
  if "users" not in exp.shifted:
    keep = exp.config.analysis.shift_keep
    exp.shifted["users"] = examples.least_similar_histories(
        exp.task, exp.test_users, keep, _retrievers(exp, dataclasses.replace(
            setting, retrieval="dense")).dense)
    kept = [len(u.history) for u in exp.shifted["users"]]
    logging.info("behaviour shift: each test user keeps the %.0f %% of its history least "
                 "similar to its queries (%d of %d items)", 100 * keep, sum(kept),
                 sum(len(u.history) for u in exp.test_users))
  return exp.shifted["users"]


def shift_suffix(keep: float) -> str:
  """The name of a behaviour-shift variant: "shift50" keeps 50 % of each history."""
  return f"shift{round(100 * keep)}"


def _profiles(exp: Experiment, setting: Setting) -> dict[str, str]:
  """The PAG profiles `setting` reads: a shifted setting's test users get profiles written from
  their cut histories (cached apart, in profiles@shift<percent kept>.json)."""
  if setting.history != "shift" or not (setting.profile or setting.base == "P"):
    return exp.profiles
  if "profiles" not in exp.shifted:
    c = exp.config
    users = users_of(exp, setting)
    with progress.bar("PAG profiles (shifted histories)", len(users), "users",
                      exp.show_progress) as bar, _profile_writer(exp) as (model, tokenizer):
      cache = exp.path(f"profiles@{shift_suffix(c.analysis.shift_keep)}.json")
      exp.shifted["profiles"] = {**exp.profiles, **profiles_lib.user_profiles(
          model, tokenizer, exp.task, users, cache_path=cache, num_items=c.profile.num_items,
          decoding=Decoding(max_new_tokens=c.profile.max_new_tokens), seed=c.seed,
          progress=bar.advance)}
  return exp.shifted["profiles"]


def evaluate(exp: Experiment, model, setting: Setting) -> None:
  """Writes predictions/<setting>.json: every test query, each row with its own user's adapter
  (stacked, gathered per row), never a merged per-user model. Of several processes, each
  predicts its share of the users (balanced by queries) into a part file; process 0 joins them."""
  path = _predictions(exp, setting)
  users = users_of(exp, setting)
  mine = cluster.share(users, cost=lambda u: len(u.queries))
  if cluster.count() > 1:
    cluster.log_share(f"{setting.name}: predicts the queries of", [u.id for u in mine])
  part = path if cluster.count() == 1 else cluster.part_path(path)
  if not files.is_done(part):
    preds = _predict_users(exp, model, setting, mine)
    if cluster.count() == 1:
      with files.output(path) as tmp:
        lamp_write.write_predictions(tmp, exp.task, preds)
    else:
      files.write_json(part, preds)
  if cluster.count() > 1:
    cluster.barrier(f"{setting.name} predicted")
    if cluster.is_main():
      preds = {}
      for p in cluster.part_paths(path):
        with open(p) as f:
          preds.update(json.load(f))
      order = [q.id for u in users for q in u.queries if q.id in preds]  # as one process writes
      with files.output(path) as tmp:
        lamp_write.write_predictions(tmp, exp.task, {i: preds[i] for i in order + sorted(
            preds.keys() - set(order))})
      for p in glob.glob(f"{path}.part-*"):
        storage.remove(p)
        os.remove(p)
    cluster.barrier(f"{setting.name} joined")


def _predict_users(exp: Experiment, model, setting: Setting, users) -> dict[str, str]:
  """{query id: prediction} of `users`' queries, on this process's devices."""
  adapters = _load_adapters(exp, model, setting, users) if setting.personal else None
  retrievers = _retrievers(exp, setting)
  profiles = _profiles(exp, setting)
  # Table 1's random_history draws from every user's items (the paper's reading) or the user's.
  corpus = (examples.random_history_corpus(exp.data.users, exp.config.data.random_history)
            if setting.retrieval == "random" else None)
  rows, ids = [], []
  for index, user in enumerate(users):
    for qid, prompt in examples.query_prompts(exp.task, user, setting, profiles.get(user.id),
                                              seed=exp.config.seed, retrievers=retrievers,
                                              corpus=corpus):
      rows.append((index, _model_input(exp, prompt)))
      ids.append(qid)
  if not rows:
    return {}
  with progress.bar(f"stage 3: {setting.name}", len(rows), "queries", exp.show_progress) as b:
    preds = _predict(exp, model, adapters, rows, b.update)
  return dict(zip(ids, preds))


def write_report(exp: Experiment) -> dict:
  """results.json, significance.json and results.md from the predictions: returns
  {setting: {metric: value}}, scored on the test queries that have a gold (a split released
  without golds, as LaMP's test split, is predicted, not scored). A prediction file that lacks a
  test query is an error naming both."""
  queries = [q for u in exp.test_users for q in u.queries]
  golds = {q.id: q.gold for q in queries if q.gold is not None}
  preds = {}
  for setting in exp.settings:
    path = _predictions(exp, setting)
    preds[setting.name] = lamp.read_outputs(path)
    missing = [q.id for q in queries if q.id not in preds[setting.name]]
    if missing:
      raise DataError(f"{path}: no prediction for query id {missing[0]!r} ({len(missing)} of "
                      f"{len(queries)} missing; delete the file to predict again)")
  unscored = _unscored_note(exp, queries)
  if not golds:
    logging.warning("%s", unscored)
    if cluster.is_main():
      files.write_text(exp.path("results.md"), f"# {exp.task.name}\n\n{unscored}\n")
    return {}
  scored = {name: {i: p[i] for i in golds} for name, p in preds.items()}
  results = {name: metrics.evaluate(exp.task.name, golds, p) for name, p in scored.items()}
  tests = significance.grid_tests(exp.task.name, golds, scored, results, seed=exp.config.seed)
  if not cluster.is_main():
    return results
  if unscored:
    logging.warning("%s", unscored)
  files.write_json(exp.path("results.json"), results)
  files.write_json(exp.path("significance.json"), tests.to_json())
  users = sum(any(q.gold is not None for q in u.queries) for u in exp.test_users)
  table = (report.study_table if any(s.prompts == "study" for s in exp.settings)
           else report.markdown_table)
  files.write_text(exp.path("results.md"), table(
      exp.task.name, results, tests=tests, num_queries=len(golds), num_users=users)
      + (f"\n{unscored}\n" if unscored else "") + _figure_links(exp))
  return results


def _unscored_note(exp: Experiment, queries) -> str:
  """A line naming the splits whose queries have no gold ("" when every query has one)."""
  splits: dict[str, int] = {}
  for q in queries:
    if q.gold is None:
      splits[q.split or "?"] = splits.get(q.split or "?", 0) + 1
  if not splits:
    return ""
  which = ", ".join(f"{n} of split {s!r}" for s, n in splits.items())
  return (f"{sum(splits.values())} of {len(queries)} test queries have no gold ({which}: the "
          f"release ships no golds for it): predicted in {exp.path('predictions')}/<setting>.json"
          " (LaMP's outputs format, for the leaderboard), not scored.")


# -- helpers ------------------------------------------------------------------------------------


def _figure_links(exp: Experiment) -> str:
  """results.md's links to the analyses' tables and figures the workdir holds."""
  from oppu_jax.analysis import ANALYSES

  found = [n for n in ANALYSES if files.is_done(exp.path("analysis", f"{n}.png"))]
  if not found:
    return ""
  return "\nAnalyses: " + ", ".join(
      f"[{n}](analysis/{n}.md) ([figure](analysis/{n}.png))" for n in found) + "\n"


def _given_data(config, task):
  """The LaMP data at config.data.path (its configured splits), or None to generate it."""
  path = _input(config, config.data.path)
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


def _input(config, path: str) -> str:
  """A data or model path as a local path (a store URL is fetched once into the cache)."""
  return storage.local_copy(path, config.storage.cache)


def _model_input(exp: Experiment, prompt: str) -> list[int]:
  """A query prompt's ids, as the base's family reads them (`conventions.query`)."""
  c = exp.config
  return exp.base_model.conventions.query(prompt, exp.tokenizer, c.model.cutoff,
                                          c.eval.max_new_tokens)


def make_plan(exp: Experiment, plan_id: str, pairs, batch_size: int, epochs: int,
              grad_accum: int = 1):
  """(prompt, answer) pairs -> the trainer's plan, each pair encoded as the base's family trains
  (`conventions.example`; an empty prompt is next-token on the answer)."""
  conventions, cutoff = exp.base_model.conventions, exp.config.model.cutoff
  encoded = [conventions.example(p, a, exp.tokenizer, cutoff) for p, a in pairs]
  return plan_user(plan_id, encoded, batch_size=batch_size, epochs=epochs, grad_accum=grad_accum,
                   seq_buckets=tuple(exp.config.model.seq_buckets),
                   target_buckets=tuple(exp.config.model.target_buckets))


def predictions_path(exp: Experiment, setting: Setting) -> str:
  return _predictions(exp, setting)


def adapter_dir(exp: Experiment, setting: Setting, user_id: str) -> str:
  return _adapter_dir(exp, setting, user_id)


def _predictions(exp: Experiment, setting: Setting) -> str:
  return exp.path("predictions", f"{setting.name}.json")


def _adapter_dir(exp: Experiment, setting: Setting, user_id: str) -> str:
  return exp.path("adapters", setting.adapter_setting, user_id)


def _adapter_owner(setting: Setting) -> Setting:
  """The setting that trains the adapters `setting` plugs in (itself, or the one it reuses)."""
  return STUDY[setting.adapters_of] if setting.adapters_of else setting


def _peft_config(exp: Experiment, setting: Setting):
  """config.peft with the setting's own LoRA rank (the study's r = 8..64) and PEFT method, if it
  has them."""
  peft = exp.config.peft
  if not (setting.rank or setting.method):
    return peft
  peft = peft.copy_and_resolve_references()
  peft.rank = setting.rank or peft.rank
  peft.method = setting.method or peft.method
  return peft


def _retrievers(exp: Experiment, setting: Setting) -> examples.Retrievers:
  """The dense scorer and the fitted RSPG selector, built once per run when a setting needs
  them, and for a PEFT + RAG row the best RAG row's retriever."""
  best = _best_retriever(exp) if setting.retrieval == BEST else None
  method = best or setting.retrieval
  r = exp.retrievers
  # RSPG's features read the dense scores too, so a resumed run rebuilds the same inputs.
  if method in ("dense", "rspg") and r.dense is None:
    from oppu_jax.models import bert

    encoder = bert.DenseEncoder(exp.config.retrieval.dense_model)
    logging.info("dense retriever: %s", exp.config.retrieval.dense_model or
                 "all-MiniLM-L6-v2 (embedded)")
    r = dataclasses.replace(r, dense=encoder.scores)
  if method == "rspg" and r.rspg is None:
    r = dataclasses.replace(r, rspg=_rspg_selector(exp, r))
  exp.retrievers = r
  return dataclasses.replace(r, best=best)


def _rspg_selector(exp: Experiment, retrievers: examples.Retrievers):
  """RSPG's rule, fitted on the non-test users' queries (cached in W/rspg.json)."""
  from oppu_jax.data import rspg

  path = exp.path("rspg.json")
  if files.is_done(path):
    return rspg.Selector.load(path)
  candidates = tuple(exp.config.retrieval.rspg_candidates)
  rows = examples.rspg_training_rows(exp.task, exp.other_users, candidates, k=4,
                                     seed=exp.config.seed, retrievers=retrievers)
  selector = rspg.fit(rows, candidates)
  selector.save(path)
  chosen = [candidates[int(np.argmax(selector.weights @ x))] for x, _ in rows]
  logging.info("RSPG fitted on %d training queries; it picks %s", len(rows),
               {c: chosen.count(c) for c in candidates})
  return selector


def _best_retriever(exp: Experiment) -> str:
  """The retriever of the best rag_* row evaluated so far (the task's first metric)."""
  golds = {q.id: q.gold for u in exp.test_users for q in u.queries if q.gold is not None}
  scored = {}
  for setting in exp.settings:
    path = _predictions(exp, setting)
    if setting.name.startswith("rag_") and files.is_done(path):
      scored[setting] = metrics.evaluate(exp.task.name, golds, lamp.read_outputs(path))
  if not scored:
    raise DataError("the PEFT + RAG rows need an evaluated rag_* row (none has predictions)")
  first = next(iter(next(iter(scored.values()))))
  sign = 1 if first in significance.LOWER_IS_BETTER else -1
  best = min(scored, key=lambda s: sign * scored[s][first])
  logging.info("PEFT + RAG: the best RAG row is %s (%s %.4f)", best.name, first,
               scored[best][first])
  return best.retrieval


# -- calls into models/, peft/, train/ and eval/: one place each --------------------------------


def _profile_writer(exp: Experiment):
  """The model and tokenizer that write PAG profiles (profile_writer.py): a decoder-only chat
  model, config.profile.model_path's or the base."""
  return profile_writer.writer(exp.config, exp.base_model, exp.tokenizer,
                               load_model=lambda path: _load_model(exp.config, path),
                               local_path=lambda path: _input(exp.config, path))


def _load_model(config, path: str | None = None):
  """The model at `path` (default: config.model.path) in the run's dtypes and backend."""
  path = config.model.path if path is None else path
  model, _ = load.load_model(_input(config, path) or None,
                             backend=config.model.backend,
                             param_dtype=config.model.param_dtype,
                             compute_dtype=config.model.compute_dtype, remat=config.model.remat)
  return model


def _task_lora(exp: Experiment) -> Lora:
  """The task-adaptation LoRA of config.task_adapt (the paper's: q, k, v)."""
  return Lora.from_config(exp.config.task_adapt, method_lib.BuildContext(
      table=exp.base_model.weight_table(), key="config.task_adapt"))


def _merge_task_lora(exp: Experiment, checkpoint: str, adapter=None):
  """Saves `adapter` to the orbax checkpoint (or restores it from there) and merges it."""
  # Host (numpy) arrays, the same in every process: orbax writes them once, from process 0.
  lora, checkpointer = _task_lora(exp), ocp.StandardCheckpointer()
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
           **kw):
  """Both training stages: config.train at the stage's rate and slots, with a progress bar."""
  total = sum(p.total_steps for p in plans)
  with progress.bar(desc, total, "steps", exp.show_progress) as bar:
    return multi_user.train_users(model, method, plans, train_config(exp, learning_rate, slots),
                                  progress=bar, **kw)


def _load_adapters(exp: Experiment, model, setting: Setting, users) -> UserAdapters:
  """`users`' adapters of `setting`, stacked in their order."""
  adapters = UserAdapters.load([_adapter_dir(exp, setting, u.id) for u in users],
                               model.weight_table(), model.config)
  logging.info("%s: %d users' %s adapters, %.1f KiB each (f32)", setting.name,
               adapters.num_users, adapters.method.name, adapters.bytes_per_user / 1024)
  return adapters


def _predict(exp: Experiment, model, adapters, rows, progress=None) -> list[str]:
  """rows [(user index, prompt ids)] -> one prediction each: the label with the best score, or
  the decoded text; progress(rows done) after every batch."""
  e, tok, task = exp.config.eval, exp.tokenizer, exp.task
  if task.labels and e.classification == "score":
    choices = [model.conventions.choice(label, tok) for label in task.labels]
    scores = score.score_choices(model, adapters, rows, choices, batch_size=e.batch_size,
                                 progress=progress, mesh=exp.local_mesh)
    return [task.labels[int(i)] for i in np.argmax(scores, axis=1)]
  outs = decode.generate_for_rows(
      model, adapters, rows, Decoding.from_config(e, seed=exp.config.seed), eos_id=tok.eos_id,
      pad_id=tok.pad_id, progress=progress, mesh=exp.local_mesh)
  return [tok.decode(o).strip() for o in outs]
