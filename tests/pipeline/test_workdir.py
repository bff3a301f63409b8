"""workdir: claim guards the config a workdir belongs to."""

import os

import pytest

from oppu_jax.errors import WorkdirError
from oppu_jax.pipeline import workdir


def test_claim_accepts_its_own_config_and_refuses_another(tmp_path):
  config = {"task": "LaMP_3", "train": {"epochs": 2}, "progress": True}
  workdir.claim(str(tmp_path), config, overwrite=False)
  workdir.claim(str(tmp_path), dict(config, progress=False), overwrite=False)  # not fingerprinted
  other = dict(config, train={"epochs": 3})
  with pytest.raises(WorkdirError, match=r"differs in train\.epochs"):
    workdir.claim(str(tmp_path), other, overwrite=False)
  # A key the config gained after the run was made is no difference at its default value.
  newer = dict(config, data={"test_users": "most_active"})
  workdir.claim(str(tmp_path), newer, overwrite=False)
  with pytest.raises(WorkdirError, match=r"differs in data\.test_users"):
    workdir.claim(str(tmp_path), dict(config, data={"test_users": "spread"}), overwrite=False)
  (tmp_path / "stale").write_text("x")
  workdir.claim(str(tmp_path), other, overwrite=True)
  assert os.listdir(tmp_path) == ["config.json"]
