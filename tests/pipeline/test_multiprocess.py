"""Several processes, one run: 2 processes x 2 virtual CPU devices (jax.distributed, gloo
collectives) against one process, a 2 x 2 mesh in one process, and a killed process resumed.

Every run here is the tiny LaMP_3 config (tests/tiny_run.py) with a 6-step task adaptation that
saves a preemption checkpoint every 2 steps, started as `oppu_jax.main` in subprocesses (through
audited_main.py, which records every file each process renames into place).

Tolerance: a run on another device layout is not bit-equal to the one-device run: the
data-parallel gradient is summed over 4 devices in another order, and a base split over the
model axis sums its matmuls' partial products in another order; f32 addition is not
associative. The task LoRA then agrees to ~3e-7. A user's adapter trains one or two Adam steps
here, and Adam's first step divides each gradient entry by its own magnitude (+ eps 1e-8), so an
entry whose gradient is near eps turns a 1e-7 relative difference into a visible one: lora_B
(|x| ~ 3e-3, one update of lr 3e-3) agreed to 1e-7 on the machine these tests were written on and
to 6.5e-5 on a later one (same jax 0.10.2). We allow 1e-4, a thirtieth of one update: a user
trained on other data or for another number of steps differs by whole updates. The same layout is
bit-equal, killed and resumed or not.
"""

import glob
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from virtual_devices import device_env

pytestmark = pytest.mark.multiprocess  # every test here reads the module's jax.distributed runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN = os.path.join(ROOT, "tests", "pipeline", "audited_main.py")
STAGE1 = ["--config.task_adapt.batch_size=4", "--config.task_adapt.epochs=3",
          "--config.task_adapt.checkpoint_every=2"]
ATOL = 1e-4
PAG = ["--config.settings=non_personalized,oppu_k0,pag_k0", "--config.profile.max_new_tokens=6"]
TEST_USERS = {"u0000", "u0001", "u0002"}


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  env = dict(device_env(devices), PYTHONPATH=os.path.join(ROOT, "tests"))
  env.update({k: str(v) for k, v in extra.items()})
  return env


def launch(model_dir: str, workdir: str, processes: int = 1, devices: int = 2, args=(),
           kill: dict | None = None, timeout: float = 600) -> list[int]:
  """Runs the tiny config in `processes` processes of `devices` devices; their exit codes.
  kill: process -> the audited_main.py variables that make it kill itself. Logs go to
  <workdir>.p<i>.log, the audit of renamed paths to <workdir>.audit."""
  port = _port()
  procs = []
  for i in range(processes):
    cluster = (dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=processes,
                    JAX_PROCESS_ID=i) if processes > 1 else {})
    env = _env(devices, OPPU_TEST_AUDIT=f"{workdir}.audit", **cluster, **(kill or {}).get(i, {}))
    cmd = [sys.executable, MAIN, f"--config={ROOT}/tests/tiny_run.py:LaMP_3,{model_dir}",
           f"--workdir={workdir}", "--config.distributed.heartbeat_timeout_seconds=5",
           *STAGE1, *args]
    log = open(f"{workdir}.p{i}.log", "w")
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  return [p.wait(timeout=timeout) for p in procs]


def log(workdir: str, i: int = 0) -> str:
  with open(f"{workdir}.p{i}.log") as f:
    return f.read()


def audit(workdir: str) -> list[tuple[int, str]]:
  with open(f"{workdir}.audit") as f:
    return [(int(who), os.path.relpath(path, workdir))
            for who, path in (line.split(" ", 1) for line in f.read().splitlines())]


def adapters(workdir: str) -> dict[str, dict[str, np.ndarray]]:
  return {os.path.relpath(f, workdir): load_file(f)
          for f in glob.glob(f"{workdir}/adapters/*/*/adapter_model.safetensors")}


def task_lora(workdir: str) -> list[np.ndarray]:
  import jax
  import orbax.checkpoint as ocp

  return jax.tree.leaves(ocp.StandardCheckpointer().restore(f"{workdir}/checkpoints/task_B"))


def read(path: str) -> str:
  with open(path) as f:
    return f.read()


def assert_same_outputs(a: str, b: str, atol: float) -> None:
  """Same metrics and predictions of a's settings; adapters and the task LoRA within atol (0:
  bit-equal)."""
  ours = json.loads(read(f"{a}/results.json"))
  theirs = json.loads(read(f"{b}/results.json"))
  assert ours == {k: theirs[k] for k in ours}
  for setting in ours:
    assert read(f"{a}/predictions/{setting}.json") == read(f"{b}/predictions/{setting}.json")
  ours, theirs = adapters(a), adapters(b)
  assert sorted(ours) == sorted(theirs) and len(ours) == len(TEST_USERS)
  for name, tensors in ours.items():
    for key, x in tensors.items():
      np.testing.assert_allclose(x, theirs[name][key], rtol=0, atol=atol, err_msg=name + key)
  for x, y in zip(task_lora(a), task_lora(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
  """workdirs: "two" (2 processes x 2 devices) and "one" (1 process, 1 device), both with PAG
  (profiles shared out, then joined; a second task adaptation, variant P)."""
  base = tmp_path_factory.mktemp("multiprocess")
  two, one = str(base / "two"), str(base / "one")
  assert launch(tiny_model_dir, two, processes=2, args=PAG) == [0, 0], \
      log(two, 0)[-3000:] + log(two, 1)
  assert launch(tiny_model_dir, one, devices=1, args=PAG) == [0], log(one)[-3000:]
  return {"two": two, "one": one, "model": tiny_model_dir, "base": base}


def test_two_processes_give_the_one_process_results(runs):
  assert_same_outputs(runs["two"], runs["one"], ATOL)
  assert "pag_k0" in json.loads(read(f"{runs['two']}/results.json"))
  profiles = lambda w: json.loads(read(f"{w}/profiles.json"))["profiles"]
  assert profiles(runs["two"]) == profiles(runs["one"]) and len(profiles(runs["one"])) == 6
  assert not glob.glob(f"{runs['two']}/**/*.part-*", recursive=True)  # joined and removed
  assert not os.path.exists(f"{runs['two']}/checkpoints/task_B.steps")  # done: removed


def test_every_user_is_trained_once_and_every_file_written_once(runs):
  two = runs["two"]
  # Each process names its share of the adapters; together they are the test users, once each.
  shares = [re.findall(r"oppu_k0: trains the adapters of \d+ users: (.*)", log(two, i))
            for i in (0, 1)]
  assert all(len(s) == 1 for s in shares), shares
  mine = [set(s[0].split(", ")) for s in shares]
  assert mine[0] and mine[1] and not mine[0] & mine[1] and mine[0] | mine[1] == TEST_USERS
  written = audit(two)
  paths = [p for _, p in written]
  assert len(paths) == len(set(paths)), sorted(p for p in paths if paths.count(p) > 1)
  by = {p: who for who, p in written}
  for who in (0, 1):  # the adapter files of a user come from the process that trained it
    assert {p.split("/")[-1] for p, w in by.items() if p.startswith("adapters/") and
            w == who} == mine[who]
  for name in ("config.json", "data", "checkpoints/task_B", "predictions/oppu_k0.json",
               "results.json", "results.md"):
    assert by[name] == 0, name
  for i in (0, 1):
    assert by[f"predictions/oppu_k0.json.part-{i}-of-2"] == i
    assert by[f"profiles.json.part-{i}-of-2"] == i  # each process its share of the profiles
  assert by["profiles.json"] == 0
  pag = [re.findall(r"PAG: writes the profiles of \d+ users: (.*)", log(two, i)) for i in (0, 1)]
  assert sorted(sum((p[0].split(", ") for p in pag), [])) == [f"u000{i}" for i in range(6)]
  assert any(p.startswith("checkpoints/task_B.steps/2") for p in paths)  # preemption checkpoint


def test_process_zero_logs_the_run_and_prints_the_table(runs):
  zero, one = log(runs["two"], 0), log(runs["two"], 1)
  assert "task adaptation B: 6 pairs, 6 steps" in zero and "| oppu_k0 |" in zero
  assert "task adaptation B" not in one and "| oppu_k0 |" not in one
  assert "process 1/2: oppu_k0: trains the adapters of" in one


def test_a_2x2_mesh_in_one_process_gives_the_unsharded_results(runs):
  """4 devices: users axis 2 (task adaptation's rows, the slots, the scored rows), model axis 2
  (the base's heads, MLP and vocabulary)."""
  mesh = str(runs["base"] / "mesh2x2")
  assert launch(runs["model"], mesh, devices=4,
                args=["--config.mesh.users=2", "--config.mesh.model=2"]) == [0], log(mesh)[-3000:]
  assert_same_outputs(mesh, runs["one"], ATOL)


def test_killed_processes_are_resumed_to_the_same_results(runs):
  """Killed twice, then finished: first process 0 (the coordinator) dies (SIGKILL) right after
  the step-2 preemption checkpoint of task adaptation, and process 1 ends with it; the same
  command again resumes at step 2, and this time process 1 dies right after saving the first of
  its two users' adapters (process 0 ends when its heartbeat is missed); the third run keeps
  every saved adapter and ends bit-equal to the uninterrupted two-process run."""
  killed = str(runs["base"] / "killed")
  codes = launch(runs["model"], killed, processes=2, kill={0: {"OPPU_TEST_KILL_AT_STEP": 2}})
  assert codes[0] == -9 and codes[1] != 0, codes
  assert not os.path.exists(f"{killed}/results.json")
  assert os.path.isdir(f"{killed}/checkpoints/task_B.steps/2")
  codes = launch(runs["model"], killed, processes=2,
                 kill={1: {"OPPU_TEST_KILL_AFTER_ADAPTER": 1}})
  assert codes[1] == -9 and codes[0] != 0, codes
  assert "resumed from the checkpoint at step 2" in log(killed, 0)
  saved = [d for d in glob.glob(f"{killed}/adapters/oppu_k0/*") if not d.endswith(".tmp")]
  assert 1 <= len(saved) < len(TEST_USERS) and not os.path.exists(f"{killed}/results.json")
  assert launch(runs["model"], killed, processes=2) == [0, 0], log(killed, 0)[-3000:]
  assert f"{len(saved)} of {len(TEST_USERS)} user adapters already trained" in log(killed, 0)
  assert_same_outputs(killed, runs["two"], atol=0)
