"""The server under load: N concurrent HTTP clients over M users' adapters (M much larger than the
device slots), against (a) the same server batching one user's requests at a time and (b) HF PEFT
in torch, one request at a time, `set_adapter` per request.

  .venv/bin/python benchmarks/serve_bench.py --workdir=runs/lamp3      # ~20 min on 2 cores
  .venv/bin/python benchmarks/serve_bench.py --workdir=runs/lamp3 --clients=8 --adapters=8 \
      --skip_reference

The workdir is a finished run (the default LaMP_3 run). The bench serves a copy of it whose
adapters/<setting>/ holds the run's users and, for M beyond them, clones of their adapters under
new user ids (hard links: the server reads and uploads each as a separate user). Each client
sends its requests one after another (a closed loop): the run's test-query prompts, greedy,
exactly --max_tokens new tokens (EOS ignored), to users spread over the M. Our servers run as `python -m
oppu_jax.serve` subprocesses queried with httpx; every program is compiled by a warm-up before
the clock starts. The reference (serve_reference.py) runs in this process after the servers have
stopped; it serves one request at a time, so its latency under N clients is the queue a
one-at-a-time server builds: computed from its measured service times, not from HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKETS = (32, 64, 128, 256, 512)  # the server's prompt buckets (its default)

_WORKDIR = flags.DEFINE_string("workdir", "runs/lamp3", "a finished run's workdir")
_SETTING = flags.DEFINE_string("setting", "oppu_k0", "the personalized setting served")
_CLIENTS = flags.DEFINE_list("clients", ["1", "8", "32"], "concurrent clients per cell")
_ADAPTERS = flags.DEFINE_list("adapters", ["8", "1000"], "users' adapters the requests spread over")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 32, "new tokens per request (EOS ignored, as "
                                   "vLLM's benchmarks do: every request the same length)")
_SLOTS = flags.DEFINE_integer("slots", 32, "rows of the server's decode step")
_DEVICE_ADAPTERS = flags.DEFINE_integer("device_adapters", 64, "adapters resident on device")
_THREADS = flags.DEFINE_integer("threads", 2, "cores for each side")
_SKIP_REFERENCE = flags.DEFINE_bool("skip_reference", False, "time our servers only")
_JSON = flags.DEFINE_string("json", "", "also write every cell's figures here")


def requests_for(clients: int) -> int:
  """Requests of a cell: enough for every client to wait on others, bounded in time."""
  return min(64, max(8, 2 * clients))


def main(argv):
  del argv
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:_THREADS.value]))
  clients = [int(c) for c in _CLIENTS.value]
  counts = [int(m) for m in _ADAPTERS.value]
  print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
  prompts, prompt_ids = _query_prompts(_WORKDIR.value, _SETTING.value)
  with tempfile.TemporaryDirectory(prefix="serve_bench_") as served:
    users = _bench_workdir(_WORKDIR.value, _SETTING.value, served, max(counts))
    plans = {(m, c): _plan(requests_for(c), m, len(prompts)) for m in counts for c in clients}
    rows = []
    for mode, extra in [("continuous batching", []), ("one user per step",
                                                      ["--one_user_per_step"])]:
      with _server(served, extra) as url:
        _warm_up(url, users, prompts, prompt_ids)
        for (m, c), plan in plans.items():
          got = asyncio.run(_load(url, users, prompts, plan, c))
          rows.append({"adapters": m, "clients": c, "server": mode, **got})
          print(_row(rows[-1]), flush=True)
    if not _SKIP_REFERENCE.value:
      import serve_reference

      for m in counts:
        longest = max(plans[(m, c)] for c in clients if (m, c) in plans)
        requests = [{"user": users[u], "prompt_ids": prompt_ids[p], "max_tokens": _MAX_TOKENS.value,
                     "ignore_eos": True} for u, p in longest]
        ref = serve_reference.run_reference(served, _SETTING.value, requests, _THREADS.value)
        seconds = [r["seconds"] for r in ref["results"]]
        tokens = [len(r["tokens"]) for r in ref["results"]]
        for c in clients:
          n = requests_for(c)
          rows.append({"adapters": m, "clients": c, "server": "HF PEFT set_adapter",
                       **_queued(seconds[:n], tokens[:n], c)})
          print(_row(rows[-1]), flush=True)
  print()
  print(_table(rows, clients, counts))
  print(f"\nload average after: {os.getloadavg()[0]:.2f}")
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump(rows, f, indent=1)


# ----------------------------------------------------------------------------------------------
# The served copy and its requests


def _query_prompts(workdir: str, setting_name: str):
  """The run's test-query prompt texts, and their ids as the server encodes them."""
  from oppu_jax.pipeline import experiment, predict
  from oppu_jax.pipeline.settings import parse_settings
  from oppu_jax.serve import source

  config = source.run_config(workdir)
  exp = experiment.setup(config, workdir)
  texts = [t for _, _, t in predict.query_texts(exp, parse_settings(setting_name)[0],
                                                exp.test_users)]
  query = exp.base_model.conventions.query
  return texts, [query(t, exp.tokenizer, source.NO_LIMIT, 0) for t in texts]


def _bench_workdir(workdir: str, setting: str, out: str, count: int) -> list[str]:
  """A copy of `workdir` (config, task checkpoint) whose setting serves `count` users: the run's
  own, then clones of their adapters (hard links). Returns the user ids, the run's first."""
  shutil.copy(os.path.join(workdir, "config.json"), out)
  os.symlink(os.path.abspath(os.path.join(workdir, "checkpoints")),
             os.path.join(out, "checkpoints"))
  src = os.path.join(workdir, "adapters", setting)
  real = sorted(os.listdir(src))
  users = real + [f"{real[i % len(real)]}_clone{i:04d}" for i in range(max(count - len(real), 0))]
  for user in users:
    origin = os.path.join(src, user.split("_clone")[0])
    shutil.copytree(origin, os.path.join(out, "adapters", setting, user), copy_function=os.link)
  return users


def _plan(n: int, adapters: int, n_prompts: int) -> list[tuple[int, int]]:
  """n (user index, prompt index) pairs: users spread over the first `adapters` (a stride that
  visits them all before repeating), prompts in turn."""
  stride = 7919  # prime: coprime with any count below it
  return [((i * stride) % adapters, i % n_prompts) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Our server


@contextlib.contextmanager
def _server(workdir: str, extra: list[str]):
  """Our server on the copy (oppu_jax.serve.spawn): yields its URL, stops it with SIGTERM."""
  from oppu_jax.serve.spawn import running_server

  with running_server(workdir, f"--setting={_SETTING.value}", f"--slots={_SLOTS.value}",
                      f"--device_adapters={_DEVICE_ADAPTERS.value}",
                      f"--max_tokens={_MAX_TOKENS.value}",
                      f"--prompt_buckets={','.join(map(str, BUCKETS))}", *extra,
                      cwd=REPO, timeout=1200) as (_, url):
    yield url


def _warm_up(url: str, users: list[str], prompts: list[str], prompt_ids) -> None:
  """A prompt of each bucket (its prefill and decode step compiled), then a full pool."""
  import httpx

  first = {}
  for i, ids in enumerate(prompt_ids):
    first.setdefault(min(b for b in BUCKETS if b >= len(ids)), i)

  async def go():
    async with httpx.AsyncClient(timeout=1200) as client:
      for i in first.values():
        await _complete(client, url, users[0], prompts[i])
      # One user, so that either server fills every row: every step width gets compiled.
      await asyncio.gather(*[_complete(client, url, users[0], prompts[i % len(prompts)])
                             for i in range(_SLOTS.value)])
  asyncio.run(go())


async def _complete(client, url: str, user: str, prompt: str) -> dict:
  r = await client.post(f"{url}/v1/completions", json={
      "model": f"{_SETTING.value}/{user}", "prompt": prompt, "max_tokens": _MAX_TOKENS.value,
      "temperature": 0, "ignore_eos": True})
  r.raise_for_status()
  return r.json()


async def _load(url: str, users: list[str], prompts: list[str], plan, clients: int) -> dict:
  """Runs `plan` with `clients` closed-loop clients: (requests, req/s, tok/s, p50, p99)."""
  import httpx

  queue = list(enumerate(plan))
  latencies, tokens, failures = [], [], 0

  async def client_loop(client):
    nonlocal failures
    while queue:
      _, (u, p) = queue.pop(0)
      start = time.perf_counter()
      try:
        out = await _complete(client, url, users[u], prompts[p])
      except httpx.HTTPError:
        failures += 1
        continue
      latencies.append(time.perf_counter() - start)
      tokens.append(out["usage"]["completion_tokens"])

  start = time.perf_counter()
  limits = httpx.Limits(max_connections=clients)
  async with httpx.AsyncClient(timeout=1200, limits=limits) as client:
    await asyncio.gather(*[client_loop(client) for _ in range(clients)])
  wall = time.perf_counter() - start
  return _figures(latencies, tokens, wall, failures)


def _queued(seconds: list[float], tokens: list[int], clients: int) -> dict:
  """A one-at-a-time server's figures under `clients` closed-loop clients, from its service
  times: clients take turns, each sends when its previous answer came back, and a request waits
  for the one being served. The server is never idle while a client waits: the wall time is the
  sum of the service times."""
  sent = [0.0] * clients  # when each client sent its current request
  free_at, latencies = 0.0, []
  for i, s in enumerate(seconds):
    c = i % clients
    free_at = max(free_at, sent[c]) + s
    latencies.append(free_at - sent[c])
    sent[c] = free_at
  return _figures(latencies, tokens, sum(seconds), 0)


def _figures(latencies, tokens, wall, failures) -> dict:
  lat = np.asarray(latencies)
  return {"requests": len(latencies), "failed": failures, "seconds": round(wall, 2),
          "req_per_s": len(latencies) / wall, "tok_per_s": sum(tokens) / wall,
          "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
          "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan")}


# ----------------------------------------------------------------------------------------------
# Printing


def _row(r: dict) -> str:
  return (f"{r['adapters']:>8d} {r['clients']:>7d}  {r['server']:<22s} {r['requests']:>4d}"
          f"{'' if not r['failed'] else ' (' + str(r['failed']) + ' failed)'} {r['seconds']:>8.1f}"
          f" {r['req_per_s']:>6.2f} {r['tok_per_s']:>7.1f} {r['p50']:>7.2f} {r['p99']:>7.2f}")


def _table(rows, clients, counts) -> str:
  head = (f"{'adapters':>8s} {'clients':>7s}  {'server':<22s} {'reqs':>4s} {'wall s':>8s} "
          f"{'req/s':>6s} {'tok/s':>7s} {'p50 s':>7s} {'p99 s':>7s}")
  lines = [head, "-" * len(head)] + [_row(r) for r in rows]
  lines.append("")
  by = {(r["adapters"], r["clients"], r["server"]): r for r in rows}
  for m in counts:
    for c in clients:
      ours = by[(m, c, "continuous batching")]
      ratios = [f"x{ours['req_per_s'] / by[(m, c, s)]['req_per_s']:.2f} vs {s}"
                for s in ("one user per step", "HF PEFT set_adapter") if (m, c, s) in by]
      lines.append(f"{m} adapters, {c} clients: continuous batching req/s " + ", ".join(ratios))
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
