"""The server as users start it (`python -m oppu_jax.serve`) on a finished tiny run: its /v1/score
answers equal the run's predictions (oppu_jax.serve.check), a burst of concurrent requests from
several users loses none, a client that goes away frees its row, and SIGTERM finishes the
requests in flight."""

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tiny_run import tiny_config
from oppu_jax.pipeline import run
from oppu_jax.serve.spawn import running_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def workdir(tiny_model_dir, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("served"))
  run.run(tiny_config("LaMP_3", tiny_model_dir), path)
  return path


@pytest.fixture()
def server(workdir):
  with running_server(workdir, "--slots=4", "--prompt_buckets=512", "--max_tokens=4096",
                      "--device_adapters=2", cwd=REPO, timeout=300,
                      stdout=subprocess.PIPE) as (proc, url):
    yield proc, url


def test_answers_equal_the_runs_predictions(workdir):
  # No --url: the check starts a server of its own on the workdir, asks, and stops it.
  check = subprocess.run(
      [sys.executable, "-m", "oppu_jax.serve.check", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert check.returncode == 0, check.stdout + check.stderr[-3000:]
  assert "6/6 answers equal predictions/oppu_k0.json" in check.stdout


def test_a_burst_loses_no_request_and_a_gone_client_frees_its_row(server):
  _, url = server
  users = httpx.get(f"{url}/v1/models").json()["data"]
  bodies = [{"model": users[i % len(users)]["id"], "prompt": f"Review {i}: it works well.",
             "max_tokens": 5, "temperature": 0.7, "seed": i} for i in range(24)]
  with concurrent.futures.ThreadPoolExecutor(12) as pool:
    answers = list(pool.map(lambda b: httpx.post(f"{url}/v1/completions", json=b, timeout=300),
                            bodies))
  assert [a.status_code for a in answers] == [200] * 24
  assert all(a.json()["usage"]["completion_tokens"] >= 1 for a in answers)
  # A client that gives up: its request is cancelled and its row freed.
  with pytest.raises(httpx.ReadTimeout):
    # 4,096 tokens, EOS ignored: seconds of work even for the tiny model (64 tokens, ended at
    # EOS or not, sometimes came back before the client gave up).
    httpx.post(f"{url}/v1/completions", json={**bodies[0], "max_tokens": 4096, "temperature": 0,
                                              "ignore_eos": True},
               timeout=httpx.Timeout(5, read=0.1))
  deadline = time.time() + 60
  while (health := httpx.get(f"{url}/health").json())["running"] and time.time() < deadline:
    time.sleep(0.2)
  assert health["running"] == 0 and health["waiting"] == 0
  assert health["stats"]["finished"] >= 25


def test_sigterm_finishes_the_requests_in_flight(server):
  proc, url = server
  users = httpx.get(f"{url}/v1/models").json()["data"]
  body = {"model": users[0]["id"], "prompt": "A long answer, please.", "max_tokens": 48,
          "temperature": 0}
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    flying = [pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=300)
              for _ in range(3)]
    while httpx.get(f"{url}/health").json()["running"] == 0:
      time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    answers = [f.result() for f in flying]
  assert [a.status_code for a in answers] == [200] * 3
  # uvicorn shuts down gracefully, then re-raises the signal it caught (exit status -15).
  assert proc.wait(120) in (0, -signal.SIGTERM)
  log = proc.stdout.read()
  assert "stopped after" in log and "Traceback" not in log, log[-3000:]
