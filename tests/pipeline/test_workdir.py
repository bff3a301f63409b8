"""workdir: claim guards the config a workdir belongs to."""

import os

import pytest

from oppu_jax.errors import WorkdirError
from oppu_jax.pipeline import workdir


def test_claim_accepts_its_own_config_and_refuses_another(tmp_path):
  config = {"task": "LaMP_3", "train": {"epochs": 2}, "progress": True}
  workdir.claim(str(tmp_path), config, overwrite=False)
  (tmp_path / "predictions").mkdir()  # a finished stage: the workdir now holds a run
  workdir.claim(str(tmp_path), dict(config, progress=False), overwrite=False)  # not fingerprinted
  other = dict(config, train={"epochs": 3})
  with pytest.raises(WorkdirError, match=r"differs in train\.epochs"):
    workdir.claim(str(tmp_path), other, overwrite=False)
  # A key the config gained after the run was made is no difference at its default value.
  newer = dict(config, data={"test_users": "most_active"})
  workdir.claim(str(tmp_path), newer, overwrite=False)
  with pytest.raises(WorkdirError, match=r"differs in data\.test_users"):
    workdir.claim(str(tmp_path), dict(config, data={"test_users": "spread"}), overwrite=False)
  # ... unless its default is not what runs before it did (random_history drew from "own").
  def drawing_from(pool):
    return dict(config, data={"test_users": "most_active", "random_history": pool})

  with pytest.raises(WorkdirError, match=r"differs in data\.random_history"):
    workdir.claim(str(tmp_path), drawing_from("corpus"), overwrite=False)
  workdir.claim(str(tmp_path), drawing_from("own"), overwrite=False)
  (tmp_path / "stale").write_text("x")
  workdir.claim(str(tmp_path), other, overwrite=True)
  assert os.listdir(tmp_path) == ["config.json"]


def test_a_workdir_with_no_finished_stage_takes_a_changed_config(tmp_path):
  """A run that failed before any stage finished (a typo in a path) does not poison its workdir:
  the corrected command takes it over, deleting nothing."""
  workdir.claim(str(tmp_path), {"task": "LaMP_3", "model": {"path": "/typo"}}, overwrite=False)
  (tmp_path / "predictions.tmp").write_text("a killed write")  # leftovers are not a stage
  (tmp_path / "mine.txt").write_text("x")
  with pytest.raises(WorkdirError, match=r"differs in model\.path"):  # mine.txt: not empty
    workdir.claim(str(tmp_path), {"task": "LaMP_3", "model": {"path": ""}}, overwrite=False)
  os.remove(tmp_path / "mine.txt")
  workdir.claim(str(tmp_path), {"task": "LaMP_3", "model": {"path": ""}}, overwrite=False)
  assert sorted(os.listdir(tmp_path)) == ["config.json", "predictions.tmp"]
  assert '"path": ""' in (tmp_path / "config.json").read_text()


def test_lock_refuses_a_live_holder_and_is_released(tmp_path):
  with workdir.lock(str(tmp_path)):
    with pytest.raises(WorkdirError, match=r"is in use by another run \(pid \d+ on "):
      with workdir.lock(str(tmp_path)):
        pass
    assert os.path.exists(tmp_path / workdir.LOCK_NAME)
  assert not os.path.exists(tmp_path / workdir.LOCK_NAME)
  with workdir.lock(str(tmp_path)):  # free again
    pass


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
  import json
  import socket
  import subprocess

  gone = subprocess.Popen(["true"])
  gone.wait()
  (tmp_path / workdir.LOCK_NAME).write_text(json.dumps(
      {"host": socket.gethostname(), "pid": gone.pid, "since": 0}))
  with workdir.lock(str(tmp_path)):
    with open(tmp_path / workdir.LOCK_NAME) as f:
      assert json.load(f)["pid"] == os.getpid()
  assert "took over the lock of a run that is gone" in caplog.text


def test_lock_of_another_host_is_stale_only_when_not_refreshed(tmp_path):
  import json
  import time

  path = tmp_path / workdir.LOCK_NAME
  path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0}))
  with pytest.raises(WorkdirError, match="pid 1 on elsewhere"):
    with workdir.lock(str(tmp_path), stale_after=60):
      pass
  old = time.time() - 120
  os.utime(path, (old, old))
  with workdir.lock(str(tmp_path), stale_after=60):
    pass


def test_holder_refreshes_its_lock(tmp_path):
  import time

  with workdir.lock(str(tmp_path), heartbeat=0.05):
    path = tmp_path / workdir.LOCK_NAME
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - os.path.getmtime(path) < 10


def test_overwrite_keeps_the_lock(tmp_path):
  with workdir.lock(str(tmp_path)):
    workdir.claim(str(tmp_path), {"task": "LaMP_3"}, overwrite=False)
    workdir.claim(str(tmp_path), {"task": "LaMP_5"}, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["config.json", workdir.LOCK_NAME]


def test_second_run_on_a_workdir_refuses_before_any_work(tmp_path):
  """A run whose workdir is held by a live process stops with the one-line error, before it
  loads a model or writes a file."""
  import json
  import socket

  from oppu_jax.pipeline import run
  from tiny_run import tiny_config

  (tmp_path / workdir.LOCK_NAME).write_text(json.dumps(
      {"host": socket.gethostname(), "pid": os.getppid(), "since": 0}))  # a live process
  with pytest.raises(WorkdirError, match="is in use by another run"):
    run.run(tiny_config("LaMP_3", str(tmp_path / "no_model")), str(tmp_path))
  assert os.listdir(tmp_path) == [workdir.LOCK_NAME]
