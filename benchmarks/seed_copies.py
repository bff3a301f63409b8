"""A finished seed workdir of `quality_seeds.py`, copied with some config values changed and run
again: only the stages the change touches are redone (the copy keeps the data, the task-adapted
base and whatever else `keep` matches). For warm_epochs.py and continual_bench.py."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seed_workdirs(workdir: str) -> list[str]:
  """The seed workdirs `<workdir>/seed<k>` of a quality_seeds.py run; exits with a one-line error
  if there is none."""
  seeds = sorted(glob.glob(os.path.join(workdir, "seed*")))
  if not seeds:
    sys.exit(f"error: {workdir}: no seed<k> workdirs (run quality_seeds.py first)")
  return seeds


def read(directory: str, name: str):
  with open(os.path.join(directory, name)) as f:
    return json.load(f)


def copy_and_run(src: str, dst: str, changes: dict, drop: tuple[str, ...]) -> None:
  """`src` copied to `dst` without the names in `drop`, its config.json given `changes`
  ({"section.key": value}), then `oppu_jax.main` on it (skipped once dst has results.json)."""
  if os.path.exists(os.path.join(dst, "results.json")):
    return
  shutil.rmtree(dst, ignore_errors=True)
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
      *drop, "results.json", "results.md", "significance.json", "timings.json", "run.lock"))
  config = read(src, "config.json")
  for key, value in changes.items():
    *sections, leaf = key.split(".")
    node = config
    for section in sections:
      node = node[section]
    node[leaf] = value
  with open(os.path.join(dst, "config.json"), "w") as f:  # the run's claim then matches
    json.dump(config, f, indent=2, sort_keys=True)
  config_file = os.path.join(REPO, "configs", f"{config['task'].lower().replace('_', '')}.py")
  if config.get("recipe", "embedded") != "embedded":
    config_file += f":{config['recipe']}"
  cmd = [sys.executable, "-m", "oppu_jax.main", f"--config={config_file}", f"--workdir={dst}",
         f"--config.seed={config['seed']}", f"--config.settings={config['settings']}",
         "--config.progress=False", *(f"--config.{k}={v}" for k, v in changes.items())]
  print("$", " ".join(cmd), flush=True)
  start = time.time()
  subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  print(f"  {time.time() - start:.0f} s", flush=True)


def pooled_test(pairs) -> tuple[str, dict, dict, dict]:
  """Paired tests of a against b over several seeds' queries together: `pairs` lists
  (seed, workdir_a, setting_a, workdir_b, setting_b), both workdirs on the same data; query ids
  are prefixed by the seed. -> (task, {metric: Test}, metrics of a, metrics of b)."""
  sys.path.insert(0, REPO)
  from oppu_jax.data import lamp
  from oppu_jax.eval import metrics, significance

  golds, a, b, task = {}, {}, {}, None
  for seed, workdir_a, setting_a, workdir_b, setting_b in pairs:
    task = read(workdir_a, "config.json")["task"]
    data = {}
    for name in ("train_outputs.json", "dev_outputs.json", "test_outputs.json"):
      path = os.path.join(workdir_a, "data", name)
      if os.path.exists(path):
        data.update(lamp.read_outputs(path))
    for preds, workdir, setting in ((a, workdir_a, setting_a), (b, workdir_b, setting_b)):
      out = lamp.read_outputs(os.path.join(workdir, "predictions", f"{setting}.json"))
      preds.update({f"{seed}/{i}": p for i, p in out.items()})
      golds.update({f"{seed}/{i}": data[i] for i in out if i in data})
  return (task, significance.compare(task, golds, a, b), metrics.evaluate(task, golds, a),
          metrics.evaluate(task, golds, b))
