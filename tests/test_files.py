"""files: outputs appear whole or not at all; done means present."""

import json
import os

import pytest

from oppu_jax import files


def test_output_renames_a_finished_file_or_directory(tmp_path):
  path = str(tmp_path / "sub" / "out.json")
  assert not files.is_done(path)
  with files.output(path) as tmp:
    assert os.path.dirname(tmp) == os.path.dirname(path) and not files.is_done(path)
    with open(tmp, "w") as f:
      f.write("1")
  assert files.is_done(path) and os.listdir(tmp_path / "sub") == ["out.json"]

  folder = str(tmp_path / "data")
  for text in ("old", "new"):  # a directory replaces the one there
    with files.output(folder) as tmp:
      os.makedirs(tmp)
      (open(os.path.join(tmp, "a.txt"), "w")).write(text)
  assert open(os.path.join(folder, "a.txt")).read() == "new"
  assert sorted(os.listdir(tmp_path)) == ["data", "sub"]


def test_a_failed_write_leaves_the_old_output_and_no_temp(tmp_path):
  path = tmp_path / "results.json"
  files.write_json(str(path), {"a": 1})
  with pytest.raises(TypeError):
    files.write_json(str(path), {"a": object()})
  assert json.loads(path.read_text()) == {"a": 1}
  # A killed run's leftover temp is replaced, not mistaken for the output.
  (tmp_path / "results.json.tmp").write_text("half")
  files.write_json(str(path), {"a": 2})
  assert os.listdir(tmp_path) == ["results.json"]
  assert path.read_text() == '{\n  "a": 2\n}'
