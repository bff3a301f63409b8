"""Workdirs on object stores, through the local filesystem addressed as one (file://): outputs
pushed with markers, pulled only when finished, a run resumed from the store alone."""

import json
import os

import pytest

from oppu_jax import files, storage


@pytest.fixture(autouse=True)
def _no_mirrors(monkeypatch):
  monkeypatch.setattr(storage, "_mirrors", {})  # each test a fresh process


def test_finished_outputs_reach_the_store_and_come_back(tmp_path):
  store = tmp_path / "store"
  local = storage.attach(f"file://{store}", str(tmp_path / "cache"))
  files.write_json(os.path.join(local, "results.json"), {"mae": 0.5})
  with files.output(os.path.join(local, "adapters", "u1")) as tmp:
    os.makedirs(tmp)
    files.write_text(os.path.join(tmp, "adapter_config.json"), "{}")  # inside: not pushed alone
  assert json.loads((store / "results.json").read_text()) == {"mae": 0.5}
  assert (store / "results.json.complete").exists() and (store / "adapters/u1.complete").exists()
  storage.detach(local)  # another machine: an empty cache
  again = storage.attach(f"file://{store}", str(tmp_path / "cache2"))
  assert json.loads(open(os.path.join(again, "results.json")).read()) == {"mae": 0.5}
  assert os.path.exists(os.path.join(again, "adapters", "u1", "adapter_config.json"))


def test_an_output_without_its_marker_is_not_pulled(tmp_path):
  store = tmp_path / "store"
  (store / "adapters" / "u2").mkdir(parents=True)  # a push cut short: files, no marker
  (store / "adapters" / "u2" / "adapter_config.json").write_text("{}")
  local = storage.attach(f"file://{store}", str(tmp_path / "cache"))
  assert not os.path.exists(os.path.join(local, "adapters", "u2"))


def test_removed_outputs_leave_the_store(tmp_path):
  store = tmp_path / "store"
  local = storage.attach(f"file://{store}", str(tmp_path / "cache"))
  path = os.path.join(local, "p.json.part-0-of-2")
  files.write_text(path, "{}")
  storage.remove(path)
  assert not (store / "p.json.part-0-of-2").exists()
  assert not (store / "p.json.part-0-of-2.complete").exists()


def test_local_paths_are_untouched(tmp_path):
  assert storage.attach(str(tmp_path), str(tmp_path / "cache")) == str(tmp_path)
  assert storage.local_copy(str(tmp_path), "unused") == str(tmp_path)


def test_remote_inputs_are_fetched_once(tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "x.json").write_text("[1]")
  copy = storage.local_copy(f"file://{tmp_path / 'data'}", str(tmp_path / "cache"))
  assert open(os.path.join(copy, "x.json")).read() == "[1]"
  assert storage.local_copy(f"file://{tmp_path / 'data'}", str(tmp_path / "cache")) == copy


def test_files_inside_an_unfinished_output_are_not_pushed_alone(tmp_path):
  store = tmp_path / "store"
  local = storage.attach(f"file://{store}", str(tmp_path / "cache"))
  with files.output(os.path.join(local, "data")) as tmp:
    os.makedirs(tmp)
    files.write_text(os.path.join(tmp, "x.json"), "[]")
  assert not list(store.glob("data.tmp*")) and (store / "data" / "x.json").exists()
