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

The stages live in their own files: experiment.py (what every stage reads, and its paths),
pag.py (profiles), training.py (task adaptation, the users' adapters), predict.py (evaluation),
results.py (the report); retrievers.py and shift.py serve them.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

from oppu_jax import files, storage
from oppu_jax.errors import ConfigError
from oppu_jax.pipeline import cluster, progress, workdir as wd
from oppu_jax.pipeline.experiment import (BASE_VARIANTS, Experiment, adapter_owner, base_of,
                                          predictions_path, setup)
from oppu_jax.pipeline.pag import ensure_profiles
from oppu_jax.pipeline.predict import evaluate
from oppu_jax.pipeline.results import write_report
from oppu_jax.pipeline.training import adapt_to_task, train_user_adapters


def run(config, workdir: str, then: Callable[[Experiment], object] | None = None) -> dict:
  """Runs (or resumes) the configured experiment; returns {setting: {metric: value}}. The run
  holds the workdir's lock throughout (of a multi-process job, its first process). `then(exp)`
  runs after the stages, before the report (the analyses: `analysis.after_run(config)`)."""
  if config.analysis.name and then is None:
    raise ConfigError("config.analysis.name: the analyses run from oppu_jax.main (or pass "
                      "then=analysis.after_run(config) to run.run)")
  if config.analysis.name and cluster.count() > 1:
    raise ConfigError("config.analysis.name: the analyses run in one process; run them on the "
                      "finished workdir without config.distributed")
  # A gs:// (any store URL) workdir: the run works in a local mirror of it (storage.py).
  workdir = storage.attach(workdir, config.storage.cache, cluster.index())
  holds = wd.lock(workdir) if cluster.is_main() else contextlib.nullcontext()
  try:
    with holds, progress.recording(config.trace.dir, config.trace.skip,
                                   config.trace.steps) as stages:
      start = time.perf_counter()
      exp = setup(config, workdir)
      ensure_profiles(exp, exp.settings)
      run_settings(exp, exp.settings)
      if then is not None:
        then(exp)
      report = write_report(exp)
      if cluster.is_main():  # this invocation's stages (a resumed run lists only what it did)
        files.write_json(exp.path("timings.json"), {
            "seconds": round(time.perf_counter() - start, 2), "stages": stages})
      return report
  finally:
    storage.detach(workdir)


def run_settings(exp: Experiment, settings) -> None:
  """Predictions for each of `settings` whose file is missing, training the adapters they need;
  analyses call it with their own settings (an existing output is never made twice)."""
  ensure_profiles(exp, settings)
  cluster.barrier("settings")  # every process decides on the same files
  for base in sorted({base_of(exp, s) for s in settings}, key=_work_order):
    todo = [s for s in settings
            if base_of(exp, s) == base and not files.is_done(predictions_path(exp, s))]
    if todo:
      model = adapt_to_task(exp, base)  # dropped when this variant's settings are done
      for setting in todo:
        if setting.personal:  # a setting reusing another's adapters trains that one's
          train_user_adapters(exp, model, adapter_owner(setting))
        evaluate(exp, model, setting)
      del model


def _work_order(base: str) -> tuple[int, int]:
  return BASE_VARIANTS.index(base[0]), int(base[1:] or -1)
