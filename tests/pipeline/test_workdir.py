"""workdir: outputs appear whole or not at all; done means present; claim guards the config."""

import json
import os

import pytest

from oppu_jax.errors import WorkdirError
from oppu_jax.pipeline import workdir


def test_output_renames_a_finished_file_or_directory(tmp_path):
  path = str(tmp_path / "sub" / "out.json")
  assert not workdir.is_done(path)
  with workdir.output(path) as tmp:
    assert os.path.dirname(tmp) == os.path.dirname(path) and not workdir.is_done(path)
    with open(tmp, "w") as f:
      f.write("1")
  assert workdir.is_done(path) and os.listdir(tmp_path / "sub") == ["out.json"]

  folder = str(tmp_path / "data")
  for text in ("old", "new"):  # a directory replaces the one there
    with workdir.output(folder) as tmp:
      os.makedirs(tmp)
      (open(os.path.join(tmp, "a.txt"), "w")).write(text)
  assert open(os.path.join(folder, "a.txt")).read() == "new"
  assert sorted(os.listdir(tmp_path)) == ["data", "sub"]


def test_a_failed_write_leaves_the_old_output_and_no_temp(tmp_path):
  path = tmp_path / "results.json"
  workdir.write_json(str(path), {"a": 1})
  with pytest.raises(TypeError):
    workdir.write_json(str(path), {"a": object()})
  assert json.loads(path.read_text()) == {"a": 1}
  # A killed run's leftover temp is replaced, not mistaken for the output.
  (tmp_path / "results.json.tmp").write_text("half")
  workdir.write_json(str(path), {"a": 2})
  assert os.listdir(tmp_path) == ["results.json"]
  assert path.read_text() == '{\n  "a": 2\n}'


def test_claim_accepts_its_own_config_and_refuses_another(tmp_path):
  config = {"task": "LaMP_3", "train": {"epochs": 2}, "progress": True}
  workdir.claim(str(tmp_path), config, overwrite=False)
  workdir.claim(str(tmp_path), dict(config, progress=False), overwrite=False)  # not fingerprinted
  other = dict(config, train={"epochs": 3})
  with pytest.raises(WorkdirError, match=r"differs in train\.epochs"):
    workdir.claim(str(tmp_path), other, overwrite=False)
  (tmp_path / "stale").write_text("x")
  workdir.claim(str(tmp_path), other, overwrite=True)
  assert os.listdir(tmp_path) == ["config.json"]
