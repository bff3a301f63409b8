"""The hypernetwork settings in a whole run (tiny model): hyper_k0's adapters are HF PEFT files
generated for test users the network never trained on, each from its own history only;
oppu_warm_k0 trains from them; results.md says what each cost per user; a rerun restores."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from oppu_jax.peft import hf_format
from oppu_jax.pipeline import experiment, hyper, run
from oppu_jax.pipeline.settings import BEYOND, parse_settings
from oppu_jax.train import hyper as hyper_train

SETTINGS = "non_personalized,oppu_k0,hyper_k0,oppu_warm_k0"


def _config(model_dir):
  c = tiny_config("LaMP_3", model_dir, settings=SETTINGS)
  c.data.synth.num_users = 9
  c.hyper.epochs = 1
  return c


@pytest.mark.slow
def test_hyper_and_warm_settings_run_on_unseen_users_and_export(tiny_model_dir, tmp_path,
                                                                monkeypatch):
  trained_on = []
  real_train = hyper_train.train_hypernetwork

  def spy(model, peft, hyper_net, params, embeddings, plans, config, **kw):
    trained_on.extend(p.user_id for p in plans)
    return real_train(model, peft, hyper_net, params, embeddings, plans, config, **kw)

  monkeypatch.setattr(hyper_train, "train_hypernetwork", spy)
  workdir = str(tmp_path / "w")
  results = run.run(_config(tiny_model_dir), workdir)
  assert set(results) == set(SETTINGS.split(","))

  data = experiment.setup(_config(tiny_model_dir), workdir)
  test_ids = {u.id for u in data.test_users}
  assert trained_on and not test_ids & set(trained_on)  # never a test user's history
  assert set(trained_on) == {u.id for u in data.data.users if u.history} - test_ids

  table = data.base_model.weight_table()
  for uid in test_ids:
    for setting in ("hyper_k0", "oppu_warm_k0", "oppu_k0"):
      method, _ = hf_format.load_adapter(os.path.join(workdir, "adapters", setting, uid), table)
      assert method.name == "lora"
  with open(os.path.join(workdir, "costs.json")) as f:
    costs = json.load(f)
  assert {"hyper_k0", "oppu_k0", "oppu_warm_k0"} <= set(costs)
  assert all(c["users"] == len(test_ids) for c in costs.values())
  report = open(os.path.join(workdir, "results.md")).read()
  assert "| hyper_k0 | 3 |" in report and "The hypernetwork (base B) trained once on" in report

  # A rerun restores the network (no training) and only reports.
  trained_on.clear()
  again = run.run(_config(tiny_model_dir), workdir)
  assert again == results and not trained_on


@pytest.mark.slow
def test_a_generated_adapter_depends_on_its_users_history_only(tiny_model_dir, tmp_path):
  workdir = str(tmp_path / "w")
  c = _config(tiny_model_dir)
  c.settings = "non_personalized,hyper_k0"
  run.run(c, workdir)
  exp = experiment.setup(c, workdir)
  setting = BEYOND["hyper_k0"]
  me, other = exp.test_users[0], exp.test_users[1]
  table = exp.base_model.weight_table()
  _, saved = hf_format.load_adapter(os.path.join(workdir, "adapters", "hyper_k0", me.id), table)
  # the other test user's history replaced by my own items: my adapter does not move
  changed = dataclasses.replace(other, history=me.history[:2])
  alone = hyper.generated_adapters(exp, exp.base_model, setting, [me])[me.id]
  beside = hyper.generated_adapters(exp, exp.base_model, setting, [changed, me])[me.id]
  for a, b, s in zip(jax.tree.leaves(alone), jax.tree.leaves(beside), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, s, rtol=0, atol=0)  # the file holds exactly this adapter
  # my own history does move it; with none at all (cold start) I get the average user's
  mine_changed = dataclasses.replace(me, history=me.history[:1])
  moved = hyper.generated_adapters(exp, exp.base_model, setting, [mine_changed])[me.id]
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(alone),
                                                      jax.tree.leaves(moved)))
  cold = dataclasses.replace(me, history=())
  assert hyper.generated_adapters(exp, exp.base_model, setting, [cold])[me.id] is not None


def test_beyond_settings_are_named_not_part_of_all():
  assert not {"hyper_k0", "oppu_warm_k0"} & {s.name for s in parse_settings("all")}
  names = [s.name for s in parse_settings("oppu_warm_k0,hyper_k0,oppu_k0")]
  assert names == ["oppu_k0", "hyper_k0", "oppu_warm_k0"]
