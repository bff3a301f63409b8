"""Cold start (config.cold_start): a test user with at most N history items is not trained; it
gets the task base's identity adapter or the hypernetwork's, saved as HF PEFT files like the
others."""

import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from oppu_jax.peft import hf_format
from oppu_jax.pipeline import experiment, hyper, run
from oppu_jax.pipeline.settings import SETTINGS

MAX_ITEMS = 2


def _config(model_dir, adapter):
  c = tiny_config("LaMP_3", model_dir, settings="non_personalized,oppu_k0")
  c.data.synth.num_users = 9
  c.data.synth.history_min, c.data.synth.history_max = 1, 6
  c.data.synth.long_tail = False
  c.data.test_users = "spread"  # the shortest history among the test users
  c.cold_start.max_items = MAX_ITEMS
  c.cold_start.adapter = adapter
  c.hyper.epochs = 1
  c.train.epochs = 2  # (one step of one epoch would be warm-up's lr 0: nothing would move)
  return c


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["base", "hyper"])
def test_cold_users_get_the_configured_adapter_and_the_others_train(tiny_model_dir, tmp_path,
                                                                    adapter):
  workdir = str(tmp_path / adapter)
  c = _config(tiny_model_dir, adapter)
  run.run(c, workdir)
  exp = experiment.setup(c, workdir)
  cold = [u for u in exp.test_users if len(u.history) <= MAX_ITEMS]
  warm = [u for u in exp.test_users if len(u.history) > MAX_ITEMS]
  assert cold and warm  # the generated data has both (seed 0)
  table = exp.base_model.weight_table()
  load = lambda u: hf_format.load_adapter(
      os.path.join(workdir, "adapters", "oppu_k0", u.id), table)[1]
  setting = SETTINGS["oppu_k0"]
  for u in cold:
    got = load(u)
    if adapter == "base":  # LoRA's B = 0: the task base itself
      assert all(not np.any(got["layers"][t]["b"]) for t in got["layers"])
    else:
      want = hyper.generated_adapters(exp, exp.base_model, setting, [u])[u.id]
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
  for u in warm:  # trained: B has moved
    assert any(np.any(b["b"]) for b in load(u)["layers"].values())
  report = open(os.path.join(workdir, "results.md")).read()
  assert f"| oppu_k0 cold start | {len(cold)} |" in report
