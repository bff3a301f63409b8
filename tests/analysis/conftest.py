"""One tiny LaMP_3 run on which every analysis runs once (about a minute); the tests of each
analysis check its numbers against their own computation from the workdir's files."""

import pytest

from tiny_run import tiny_config

SYNTH = {"data.synth.num_users": 9, "data.synth.history_min": 4, "data.synth.history_max": 12,
         "data.synth.long_tail": False}


@pytest.fixture(scope="session")
def analysed(tiny_model_dir, tmp_path_factory):
  """(config, workdir) of a tiny run with all eight analyses done."""
  from oppu_jax import analysis
  from oppu_jax.pipeline import run

  workdir = str(tmp_path_factory.mktemp("analysed"))
  config = tiny_config("LaMP_3", tiny_model_dir, **SYNTH, **{
      "data.num_test_users": 4, "data.test_users": "spread", "train.epochs": 2,
      # A rate a 2-layer random model moves at: its users' predictions then differ.
      "train.learning_rate": 0.05, "task_adapt.learning_rate": 0.05,
      "analysis.name": "all", "analysis.ks": (0, 1), "analysis.buckets": 2,
      "analysis.efficiency_items": (2, 4, 8), "analysis.efficiency_ranks": (2, 4),
      "profile.max_new_tokens": 8})
  run.run(config, workdir, then=analysis.after_run(config))
  return config, workdir
