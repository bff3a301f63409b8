"""The OPPU pipeline, top to bottom: data -> task adaptation -> one PEFT per user -> evaluation.

Every stage writes its result atomically into the workdir and is skipped when that result is
already there, so a killed run (kill -9 included) continues where it stopped, and a rerun of a
finished run only reports. Per-user work restarts at user granularity: a user whose adapter was
not yet written is trained again from scratch, which gives the identical adapter (its batches,
dropout and initialisation depend only on its data, the config and the seed).
"""

from __future__ import annotations

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from oppu_jax.data import lamp, synth
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.batching import encode_pair, encode_text
from oppu_jax.eval import metrics, report
from oppu_jax.models import load
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.peft import hf_format
from oppu_jax.peft.ia3 import IA3
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.merge import merge_lora
from oppu_jax.peft.prompt_tuning import PromptTuning
from oppu_jax.pipeline import examples, progress, workdir as wd
from oppu_jax.pipeline.settings import parse_settings
from oppu_jax.train import multi_user
from oppu_jax.train.user_batches import plan_user


def run(config, workdir: str) -> dict:
  """Runs (or resumes) the configured experiment; returns {setting: {metric: value}}."""
  settings = parse_settings(config.settings)
  task = tasks_lib.get_task(config.task)
  wd.claim(workdir, config.to_dict(), config.overwrite)
  data = _load_data(config, workdir, task)
  test_users, other_users = lamp.select_users(data, config.data.num_test_users)
  if config.data.max_task_users:
    other_users = lamp.select_users(other_users, config.data.max_task_users)[0]
  logging.info("%s: %d test users (%d queries), %d users for task adaptation", task.name,
               len(test_users.users), sum(len(u.queries) for u in test_users.users),
               len(other_users.users))

  tokenizer = _tokenizer(config)
  base_model, _ = load.load_model(config.model.path or None, param_dtype=config.model.param_dtype,
                                  compute_dtype=config.model.compute_dtype,
                                  remat=config.model.remat)
  profiles = _profiles(config, workdir, task, base_model, tokenizer, data, settings)

  task_models = {}
  for base in sorted({s.base for s in settings}):
    task_models[base] = _task_model(config, workdir, task, base_model, tokenizer, other_users,
                                    base, profiles)

  mesh = _mesh(config)
  for setting in settings:
    if setting.personal:
      _train_user_adapters(config, workdir, task, task_models[setting.base], tokenizer,
                           test_users.users, setting, profiles, mesh)

  results = {}
  for setting in settings:
    preds_path = os.path.join(workdir, "predictions", f"{setting.name}.json")
    if not os.path.exists(preds_path):
      preds = _evaluate(config, workdir, task, task_models[setting.base], tokenizer,
                        test_users.users, setting, profiles)
      os.makedirs(os.path.dirname(preds_path), exist_ok=True)
      lamp.write_predictions(preds_path + ".tmp", task, preds)
      os.replace(preds_path + ".tmp", preds_path)  # atomic: a killed run never leaves half
    golds = {q.id: q.gold for u in test_users.users for q in u.queries if q.gold is not None}
    preds = lamp.read_outputs(preds_path)
    results[setting.name] = metrics.evaluate(task.name, golds,
                                             {i: preds.get(i, "") for i in golds})
  wd.write_json(os.path.join(workdir, "results.json"), results)
  report.write_markdown(os.path.join(workdir, "results.md"), task.name, results)
  return results


# -- data ---------------------------------------------------------------------------------------


def _load_data(config, workdir, task):
  path = config.data.path
  if not path:
    path = os.path.join(workdir, "data")
    if not os.path.exists(os.path.join(path, "dev_outputs.json")):
      # Written aside and renamed, so a killed run never leaves a half-written data set.
      s = config.data.synth
      tmp = path + ".tmp"
      shutil.rmtree(tmp, ignore_errors=True)
      synth.generate(task.name, tmp, num_users=s.num_users, seed=config.seed,
                     history_min=s.history_min, history_max=s.history_max,
                     queries_per_user=s.queries_per_user, text_words=s.text_words,
                     shift=s.shift, noise=s.noise)
      shutil.rmtree(path, ignore_errors=True)
      os.replace(tmp, path)
      logging.info("generated LaMP-format %s data into %s", task.name, path)
  elif not os.path.exists(path):
    raise lamp.DataError(f"config.data.path {path!r} does not exist")
  return lamp.load(path, task, format=config.data.format, max_words=config.data.max_words)


def _tokenizer(config) -> Tokenizer:
  """config.model.tokenizer, else the model's own, else (a checkpoint without tokenizer files)
  the embedded SmolLM2 GGUF's."""
  path = config.model.tokenizer or config.model.path
  if path and os.path.isdir(path):
    if config.model.tokenizer or any(
        os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
      return Tokenizer.from_hf_dir(path)
    logging.info("%s has no tokenizer files: using the embedded SmolLM2 tokenizer", path)
    path = ""
  return Tokenizer.from_gguf(path or None)


def _encode(pairs, tokenizer, cutoff):
  out = []
  for prompt, answer in pairs:
    if prompt:
      p, a = tasks_lib.model_pair(prompt, answer)
      out.append(encode_pair(p, a, tokenizer.encode, eos_id=tokenizer.eos_id, cutoff=cutoff))
    else:
      out.append(encode_text(answer, tokenizer.encode, eos_id=tokenizer.eos_id, cutoff=cutoff))
  return out


def _profiles(config, workdir, task, model, tokenizer, data, settings):
  """User id -> profile text, for the settings and base variants that use one."""
  if not any(s.profile or s.base == "P" for s in settings):
    return {}
  from oppu_jax.eval import profiles as profiles_lib

  return profiles_lib.user_profiles(
      model, tokenizer, task, data.users, cache_path=os.path.join(workdir, "profiles.json"),
      num_items=config.profile.num_items, max_new_tokens=config.profile.max_new_tokens,
      seed=config.seed, given=profiles_lib.profiles_from_release(data))


# -- stage 1: task adaptation -------------------------------------------------------------------


def _train_config(config, learning_rate: float, slots: int) -> multi_user.TrainConfig:
  """The trainer settings both training stages share (config.train), at a stage's rate and slots."""
  t = config.train
  return multi_user.TrainConfig(
      learning_rate=learning_rate, weight_decay=t.weight_decay, clip_norm=t.clip_norm,
      warmup_ratio=t.warmup_ratio, slots=slots, seed=config.seed, remat=t.remat,
      memory_budget_gb=t.memory_budget_gb, users_per_pass=t.users_per_pass)


def _task_model(config, workdir, task, base_model, tokenizer, other_users, base, profiles):
  """The base LLM adapted to the task (variant B, R or P): a LoRA trained on the other users'
  queries, then merged into the base weights, as the paper does."""
  ta = config.task_adapt
  if not ta.enabled:
    return base_model
  lora = Lora(targets=tuple(ta.targets), rank=ta.rank, alpha=ta.alpha, dropout=ta.dropout)
  ckpt = os.path.abspath(os.path.join(workdir, "checkpoints", f"task_{base}"))
  checkpointer = ocp.StandardCheckpointer()
  if os.path.exists(ckpt):
    like = lora.init(base_model.config, jax.random.PRNGKey(0))
    adapter = checkpointer.restore(ckpt, like)
    logging.info("task adaptation %s: restored from %s", base, ckpt)
  else:
    pairs = examples.task_adaptation_pairs(task, other_users.users, base, ta.k, profiles,
                                           seed=config.seed)
    if not pairs:
      raise ValueError("task adaptation has no training pairs: the non-test users have no "
                       "queries with golds (set config.task_adapt.enabled=False to skip it)")
    plan = plan_user(f"task_{base}", _encode(pairs, tokenizer, config.model.cutoff),
                     batch_size=ta.batch_size, epochs=ta.epochs,
                     seq_buckets=tuple(config.model.seq_buckets),
                     target_buckets=tuple(config.model.target_buckets))
    train_config = _train_config(config, ta.learning_rate, slots=1)
    with progress.bar(f"stage 1: task adaptation ({base})", plan.total_steps, "steps",
                      config.progress) as bar:
      result = multi_user.train_users(base_model, lora, [plan], train_config,
                                      progress=bar.step_callback(count="steps"))
    adapter = result[plan.user_id].adapter
    logging.info("task adaptation %s: %d pairs, %d steps, loss %.3f -> %.3f", base, len(pairs),
                 plan.total_steps, np.mean(result[plan.user_id].losses[:3]),
                 np.mean(result[plan.user_id].losses[-3:]))
    checkpointer.save(ckpt, jax.tree.map(jnp.asarray, adapter))
    checkpointer.wait_until_finished()
  return merge_lora(base_model, lora, jax.tree.map(jnp.asarray, adapter))


# -- stage 2: one PEFT per user -----------------------------------------------------------------


def make_peft(config, tokenizer, model_config):
  p = config.peft
  if p.method == "lora":
    return Lora(targets=tuple(p.targets), rank=p.rank, alpha=p.alpha, dropout=p.dropout)
  if p.method == "ia3":
    return IA3()
  if p.method == "prompt_tuning":
    instruction = tasks_lib.get_task(config.task).description
    return PromptTuning(p.num_virtual_tokens, tuple(tokenizer.encode(instruction)))
  raise ValueError(f"config.peft.method: unknown {p.method!r}; choose lora, ia3 or prompt_tuning")


def _adapter_dir(workdir, setting, user_id):
  return os.path.join(workdir, "adapters", setting.name, user_id)


def _train_user_adapters(config, workdir, task, model, tokenizer, users, setting, profiles, mesh):
  peft = make_peft(config, tokenizer, model.config)
  todo = [u for u in users
          if not os.path.exists(os.path.join(_adapter_dir(workdir, setting, u.id),
                                             "adapter_config.json"))]
  if len(todo) < len(users):
    logging.info("%s: %d of %d user adapters already trained", setting.name,
                 len(users) - len(todo), len(users))
  if not todo:
    return
  plans = []
  for user in todo:
    pairs = examples.user_training_pairs(task, user, setting, profiles.get(user.id),
                                         seed=config.seed, history_mode=config.data.history_mode)
    plans.append(plan_user(user.id, _encode(pairs, tokenizer, config.model.cutoff),
                           batch_size=config.train.batch_size, epochs=config.train.epochs,
                           seq_buckets=tuple(config.model.seq_buckets),
                           target_buckets=tuple(config.model.target_buckets)))
  train_config = _train_config(config, config.train.learning_rate, config.train.slots)

  def save(result):
    hf_format.save_adapter(_adapter_dir(workdir, setting, result.user_id), peft, result.adapter,
                           model_config=model.config)

  with progress.bar(f"stage 2: {setting.name} adapters", len(plans), "users",
                    config.progress) as bar:
    multi_user.train_users(model, peft, plans, train_config, on_user_done=save, mesh=mesh,
                           progress=bar.step_callback(count="users"))


def _mesh(config):
  if config.mesh.users == 1 and config.mesh.model == 1:
    return None
  from oppu_jax.train import mesh as mesh_lib

  return mesh_lib.make_mesh(config.mesh.users, config.mesh.model)


# -- stage 3: evaluation ------------------------------------------------------------------------


def _evaluate(config, workdir, task, model, tokenizer, users, setting, profiles) -> dict[str, str]:
  """{query id: prediction} for every query of the test users; each row uses its own user's
  adapter (stacked, gathered per row), never a merged per-user model."""
  from oppu_jax.eval import decode, score

  peft, adapters = None, None
  if setting.personal:
    loaded = [hf_format.load_adapter(_adapter_dir(workdir, setting, u.id), model.config)
              for u in users]
    peft = loaded[0][0]
    adapters = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                            *[a for _, a in loaded])
  rows, ids = [], []
  budget = config.model.cutoff - config.eval.max_new_tokens
  for index, user in enumerate(users):
    for qid, prompt in examples.query_prompts(task, user, setting, profiles.get(user.id),
                                              seed=config.seed):
      tokens = tokenizer.encode(prompt)
      rows.append((index, tokens[-budget:]))  # too long: keep the end, where the question is
      ids.append(qid)
  e = config.eval
  with progress.bar(f"stage 3: {setting.name}", len(rows), "queries", config.progress) as bar:
    if task.labels and e.classification == "score":
      choices = [tokenizer.encode(tasks_lib.model_pair("x", label)[1]) + [tokenizer.eos_id]
                 for label in task.labels]
      scores = score.score_choices(model, peft, adapters, rows, choices,
                                   batch_size=e.batch_size)
      preds = [task.labels[int(i)] for i in np.argmax(scores, axis=1)]
    else:
      outs = decode.generate_for_rows(
          model, peft, adapters, rows, max_new_tokens=e.max_new_tokens,
          eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, method=e.decoding,
          temperature=e.temperature, top_k=e.top_k, top_p=e.top_p, num_beams=e.num_beams,
          seed=config.seed, batch_size=e.batch_size)
      preds = [tokenizer.decode(o).strip() for o in outs]
    bar.update(len(rows))
  return dict(zip(ids, preds))
