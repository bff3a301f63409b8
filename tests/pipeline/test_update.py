"""Continual updates (pipeline/update.py): version 2 continues version 1 on the new items only,
from its optimizer state, beside it; version 1 is never written again; one-line config errors."""

import hashlib
import os
import shutil

import numpy as np
import pytest

from conftest import tiny_config
from oppu_jax.errors import ConfigError
from oppu_jax.pipeline import experiment, run, update

NEW = 2  # each user's last 2 history items are the new ones


def _config(model_dir, **changes):
  c = tiny_config("LaMP_3", model_dir, settings="non_personalized,oppu_k0")
  c.continual.last_items = NEW
  for k, v in changes.items():
    c.continual[k] = v
  return c


def _digests(directory):
  return {n: hashlib.sha256(open(os.path.join(directory, n), "rb").read()).hexdigest()
          for n in sorted(os.listdir(directory)) if os.path.isfile(os.path.join(directory, n))}


def _adam_count(directory):
  with np.load(os.path.join(directory, update.OPTIMIZER)) as z:
    counts = [z[k] for k in z.files if z[k].dtype.kind == "i"]
  assert len(counts) == 1  # Adam's step count: the one integer leaf
  return int(counts[0])


@pytest.mark.slow
def test_version_2_continues_version_1_on_new_items_and_never_rewrites_it(tiny_model_dir,
                                                                         tmp_path):
  workdir = str(tmp_path / "w")
  c = _config(tiny_model_dir)
  run.run(c, workdir)
  exp = experiment.setup(c, workdir)
  root = os.path.join(workdir, "adapters", "oppu_k0")
  first_v1 = {u.id: _digests(os.path.join(root, u.id)) for u in exp.test_users}
  first_v2 = {u.id: _digests(os.path.join(root, u.id, "v2")) for u in exp.test_users}
  for u in exp.test_users:
    v1, v2 = os.path.join(root, u.id), os.path.join(root, u.id, "v2")
    assert set(first_v1[u.id]) == {"adapter_config.json", "adapter_model.safetensors",
                                   update.OPTIMIZER}
    assert first_v2[u.id]["adapter_model.safetensors"] != first_v1[u.id][
        "adapter_model.safetensors"]
    # Adam went on counting: version 1's steps (its old items), then version 2's (the new ones)
    old_steps = -(-(len(u.history) - NEW) // c.train.batch_size) * c.train.epochs
    new_steps = -(-NEW // c.train.batch_size) * c.train.epochs
    assert _adam_count(v1) == old_steps
    assert _adam_count(v2) == old_steps + new_steps

  # The update made again (its outputs deleted): the same version 2, version 1 untouched.
  for u in exp.test_users:
    shutil.rmtree(os.path.join(root, u.id, "v2"))
  os.remove(os.path.join(workdir, "predictions", "oppu_k0.json"))
  run.run(c, workdir)
  for u in exp.test_users:
    assert _digests(os.path.join(root, u.id)) == first_v1[u.id]
    assert _digests(os.path.join(root, u.id, "v2")) == first_v2[u.id]
  report = open(os.path.join(workdir, "results.md")).read()
  assert "| oppu_k0 update | 3 |" in report


def test_update_config_errors_are_one_line(tiny_model_dir, tmp_path):
  with pytest.raises(ConfigError, match="config.continual.since: 'soon' is no date"):
    run.run(_config(tiny_model_dir, since="soon", last_items=0), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="config.continual.last_items"):
    run.run(_config(tiny_model_dir, since="2018-01-01"), str(tmp_path / "b"))
