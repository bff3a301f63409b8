"""An analysis reuses the workdir's stages: a second run of all eight trains nothing and writes
the same numbers."""

import json
import os

import pytest

from analysis_helpers import read


@pytest.mark.slow
def test_rerun_trains_nothing(analysed, monkeypatch):
  config, workdir = analysed
  from oppu_jax import analysis
  from oppu_jax.analysis import ANALYSES
  from oppu_jax.pipeline import run
  from oppu_jax.train import multi_user

  before = {n: read(workdir, n) for n in ANALYSES}
  adapters = os.path.join(workdir, "adapters")
  stamps = {d: os.stat(os.path.join(adapters, d)).st_mtime_ns for d in os.listdir(adapters)}

  def no_training(*args, **kwargs):
    raise AssertionError("an analysis trained again")

  monkeypatch.setattr(multi_user, "train_users", no_training)
  run.run(config, workdir, then=analysis.after_run(config))
  assert {n: read(workdir, n) for n in ANALYSES} == before
  assert {d: os.stat(os.path.join(adapters, d)).st_mtime_ns for d in os.listdir(adapters)} == stamps
  with open(os.path.join(workdir, "results.json")) as f:
    assert set(json.load(f)) == {"non_personalized", "oppu_k0"}
