"""The retrievers a setting needs beyond BM25, built once per run: the dense scorer (the
embedded all-MiniLM-L6-v2), RSPG's selector (fitted on the non-test users), and for a PEFT + RAG
row the best RAG row's retriever."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from oppu_jax import files
from oppu_jax.data import lamp
from oppu_jax.errors import DataError
from oppu_jax.eval import metrics
from oppu_jax.pipeline import examples
from oppu_jax.pipeline.experiment import Experiment, golds as golds_of, predictions_path
from oppu_jax.pipeline.settings import BEST, Setting


def retrievers_for(exp: Experiment, setting: Setting) -> examples.Retrievers:
  """The dense scorer and the fitted RSPG selector, built once per run when a setting needs
  them, and for a PEFT + RAG row the best RAG row's retriever."""
  best = best_retriever(exp) if setting.retrieval == BEST else None
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
    r = dataclasses.replace(r, rspg=rspg_selector(exp, r))
  exp.retrievers = r
  return dataclasses.replace(r, best=best)


def rspg_selector(exp: Experiment, retrievers: examples.Retrievers):
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


def best_retriever(exp: Experiment) -> str:
  """The retriever of the best rag_* row evaluated so far (the task's first metric)."""
  golds = golds_of(exp.test_users)
  scored = {}
  for setting in exp.settings:
    path = predictions_path(exp, setting)
    if setting.name.startswith("rag_") and files.is_done(path):
      scored[setting] = metrics.evaluate(exp.task.name, golds, lamp.read_outputs(path))
  if not scored:
    raise DataError("the PEFT + RAG rows need an evaluated rag_* row (none has predictions)")
  best = metrics.best(scored)
  first = next(iter(scored[best]))
  logging.info("PEFT + RAG: the best RAG row is %s (%s %.4f)", best.name, first,
               scored[best][first])
  return best.retrieval
