"""Evaluation: every test query of a setting predicted, each row under its own user's adapter
(stacked, gathered per row), never a merged per-user model; labels scored, text decoded."""

from __future__ import annotations

import logging

import numpy as np

from oppu_jax import files
from oppu_jax.data import lamp_write
from oppu_jax.eval import decode, score
from oppu_jax.models.decoding import Decoding
from oppu_jax.peft.stack import UserAdapters
from oppu_jax.pipeline import cluster, examples, progress
from oppu_jax.pipeline.experiment import Experiment, adapter_dir, predictions_path
from oppu_jax.pipeline.pag import profiles_for
from oppu_jax.pipeline.retrievers import retrievers_for
from oppu_jax.pipeline.settings import Setting
from oppu_jax.pipeline.shift import users_of


def evaluate(exp: Experiment, model, setting: Setting) -> None:
  """Writes predictions/<setting>.json: every test query, each row with its own user's adapter
  (stacked, gathered per row), never a merged per-user model. Of several processes, each
  predicts its share of the users (balanced by queries) into a part file; process 0 joins them."""
  path = predictions_path(exp, setting)
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
      preds = cluster.joined_parts(path)
      order = [q.id for u in users for q in u.queries if q.id in preds]  # as one process writes
      with files.output(path) as tmp:
        lamp_write.write_predictions(tmp, exp.task, {i: preds[i] for i in order + sorted(
            preds.keys() - set(order))})
      cluster.remove_parts(path)
    cluster.barrier(f"{setting.name} joined")


def _predict_users(exp: Experiment, model, setting: Setting, users) -> dict[str, str]:
  """{query id: prediction} of `users`' queries, on this process's devices."""
  adapters = _load_adapters(exp, model, setting, users) if setting.personal else None
  ids, rows = query_rows(exp, setting, users)
  if not rows:
    return {}
  with progress.bar(f"stage 3: {setting.name}", len(rows), "queries", exp.show_progress) as b:
    preds = _predict(exp, model, adapters, rows, b.update)
  return dict(zip(ids, preds))


def query_rows(exp: Experiment, setting: Setting, users) -> tuple[list[str], list]:
  """(query ids, rows [(index of the user in `users`, prompt ids)]) of `users`' queries under
  `setting`, as the model reads them."""
  queries = query_texts(exp, setting, users)
  return [q for _, q, _ in queries], [(i, _model_input(exp, text)) for i, _, text in queries]


def query_texts(exp: Experiment, setting: Setting, users) -> list[tuple[int, str, str]]:
  """(index of the user in `users`, query id, prompt text) of `users`' queries under `setting`:
  what a client of the server sends for them (oppu_jax/serve/check.py)."""
  retrievers = retrievers_for(exp, setting)
  profiles = profiles_for(exp, setting)
  # Table 1's random_history draws from every user's items (the paper's reading) or the user's.
  corpus = (examples.random_history_corpus(exp.data.users, exp.config.data.random_history)
            if setting.retrieval == "random" else None)
  return [(index, qid, prompt) for index, user in enumerate(users)
          for qid, prompt in examples.query_prompts(
              exp.task, user, setting, profiles.get(user.id), seed=exp.config.seed,
              retrievers=retrievers, corpus=corpus)]


def _load_adapters(exp: Experiment, model, setting: Setting, users) -> UserAdapters:
  """`users`' adapters of `setting`, stacked in their order, at config.eval.adapter_scale."""
  adapters = UserAdapters.load([adapter_dir(exp, setting, u.id) for u in users],
                               model.weight_table(), model.config)
  adapters = adapters.scaled(exp.config.eval.adapter_scale)
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


def _model_input(exp: Experiment, prompt: str) -> list[int]:
  """A query prompt's ids, as the base's family reads them (`conventions.query`)."""
  c = exp.config
  return exp.base_model.conventions.query(prompt, exp.tokenizer, c.model.cutoff,
                                          c.eval.max_new_tokens)
