"""Warm starts, shorter: how many of OPPU's steps a user's adapter needs when it starts from the
hypernetwork's adapter (oppu_warm_k0) to reach cold OPPU's metric (oppu_k0).

  .venv/bin/python benchmarks/warm_epochs.py --workdir=runs/results/hyper_lamp3 --epochs=1,2

For each finished seed workdir of `quality_seeds.py` (`<workdir>/seed<k>`, with oppu_k0 and
oppu_warm_k0 done) and each E, a copy `<workdir>/warm_e<E>/seed<k>` whose config says
`hyper.warm_epochs=E` retrains only oppu_warm_k0 (the task base, the hypernetwork and oppu_k0
are copied, not redone), then one table: metric and seconds per user of the warm adapters at E
epochs against the cold ones at the recipe's epochs, per seed and pooled.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDONE = ("oppu_warm_k0", "oppu_warm_k0.json", "results.json", "results.md", "significance.json",
          "timings.json", "run.lock")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a quality_seeds.py workdir")
  parser.add_argument("--epochs", default="1,2")
  args = parser.parse_args()
  seeds = sorted(glob.glob(os.path.join(args.workdir, "seed*")))
  if not seeds:
    sys.exit(f"error: {args.workdir}: no seed<k> workdirs (run quality_seeds.py first)")
  rows = []  # (seed, setting, epochs, metric value, seconds per user)
  metric = None
  for src in seeds:
    seed, config = os.path.basename(src), _read(src, "config.json")
    results = _read(src, "results.json")
    metric = metric or next(iter(results["oppu_k0"]))
    for name in ("oppu_k0", "oppu_warm_k0"):
      rows.append(_row(seed, name, config["train"]["epochs"], src, metric))
    for epochs in [int(e) for e in args.epochs.split(",")]:
      dst = os.path.join(args.workdir, f"warm_e{epochs}", seed)
      _run_copy(src, dst, config, epochs)
      rows.append(_row(seed, "oppu_warm_k0", epochs, dst, metric))
  _print(rows, metric)


def _row(seed: str, name: str, epochs: int, workdir: str, metric: str):
  results, costs = _read(workdir, "results.json"), _read(workdir, "costs.json")
  return (seed, name, epochs, results[name][metric],
          costs[name]["seconds"] / costs[name]["users"])


def _run_copy(src: str, dst: str, config: dict, epochs: int) -> None:
  if os.path.exists(os.path.join(dst, "results.json")):
    return
  shutil.rmtree(dst, ignore_errors=True)
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*REDONE))
  config = json.loads(json.dumps(config))
  config["hyper"]["warm_epochs"] = epochs
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  config_file = os.path.join(REPO, "configs", f"{config['task'].lower().replace('_', '')}.py")
  cmd = [sys.executable, "-m", "oppu_jax.main", f"--config={config_file}", f"--workdir={dst}",
         f"--config.seed={config['seed']}", f"--config.settings={config['settings']}",
         f"--config.hyper.warm_epochs={epochs}", "--config.progress=False"]
  print("$", " ".join(cmd), flush=True)
  start = time.time()
  subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  print(f"  {time.time() - start:.0f} s", flush=True)


def _print(rows, metric: str) -> None:
  print(f"\n| seed | setting | epochs | {metric} | seconds per user |")
  print("|---|---|---:|---:|---:|")
  pooled: dict[tuple[str, int], list[tuple[float, float]]] = {}
  for seed, name, epochs, value, per_user in rows:
    pooled.setdefault((name, epochs), []).append((value, per_user))
    print(f"| {seed} | {name} | {epochs} | {value:.4f} | {per_user:.1f} |")
  print("\nmean over seeds:\n")
  print(f"| setting | epochs | {metric} | seconds per user |")
  print("|---|---:|---:|---:|")
  for (name, epochs), values in sorted(pooled.items()):
    n = len(values)
    print(f"| {name} | {epochs} | {sum(v for v, _ in values) / n:.4f} | "
          f"{sum(t for _, t in values) / n:.1f} |")


def _read(directory: str, name: str):
  with open(os.path.join(directory, name)) as f:
    return json.load(f)


if __name__ == "__main__":
  main()
