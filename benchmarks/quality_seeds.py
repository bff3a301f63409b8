"""Personalization quality over data seeds: one pipeline run per seed, a table of the settings'
metrics with the paired t-test marks of results.md, and the mean and spread over seeds.

  .venv/bin/python benchmarks/quality_seeds.py --config=configs/lamp3.py --workdir=runs/quality \
      --seeds=0,1,2 [-- --config.train.learning_rate=1e-3 ...]

Each seed is a workdir `<workdir>/seed<k>` run with `--config.seed=<k>` (the generated data, the
initialisation and the batches all follow it); a finished seed is only re-reported, so the
command resumes. Arguments after `--` go to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/lamp3.py")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seeds", default="0,1,2")
  args, extra = parser.parse_known_args()
  extra = [a for a in extra if a != "--"]
  seeds = [int(s) for s in args.seeds.split(",")]
  runs = {}
  for seed in seeds:
    workdir = os.path.join(args.workdir, f"seed{seed}")
    wall = _run(args.config, workdir, seed, extra)
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    with open(os.path.join(workdir, "significance.json")) as f:
      tests = json.load(f)
    runs[seed] = (results, tests, wall)
  _print_table(runs)


def _run(config: str, workdir: str, seed: int, extra: list[str]) -> float | None:
  """Runs one seed unless its results exist; the wall time in seconds, None if it was done."""
  if os.path.exists(os.path.join(workdir, "results.json")):
    return None
  cmd = [sys.executable, "-m", "oppu_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.seed={seed}", "--config.progress=False", *extra]
  print("$", " ".join(cmd), flush=True)
  start = time.time()
  subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  return time.time() - start


def _print_table(runs: dict) -> None:
  first = next(iter(runs.values()))[0]
  settings = list(first)
  metrics = list(first[settings[0]])
  print("\n| seed | setting | " + " | ".join(metrics) + " | wall |")
  print("|---|---|" + "---:|" * (len(metrics) + 1))
  for seed, (results, tests, wall) in runs.items():
    for setting in settings:
      marks = {m: "*" if tests["vs_baseline"].get(setting, {}).get(m, {}).get("better") else ""
               for m in metrics}
      cells = [f"{results[setting][m]:.4f}{marks[m]}" for m in metrics]
      shown = f"{wall:.0f} s" if wall is not None and setting == settings[0] else ""
      print(f"| {seed} | {setting} | " + " | ".join(cells) + f" | {shown} |")
  print("\nmean ± sd over seeds [min, max]:\n")
  print("| setting | " + " | ".join(metrics) + " |")
  print("|---|" + "---:|" * len(metrics))
  for setting in settings:
    cells = []
    for m in metrics:
      values = [results[setting][m] for results, _, _ in runs.values()]
      sd = statistics.stdev(values) if len(values) > 1 else 0.0
      cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f} [{min(values):.3f}, {max(values):.3f}]")
    print(f"| {setting} | " + " | ".join(cells) + " |")
  better = sum(bool(tests["vs_baseline"].get(s, {}).get(metrics[0], {}).get("better"))
               for _, tests, _ in runs.values() for s in settings)
  print(f"\n* = significantly better than non_personalized (paired t-test over queries, "
        f"p < 0.05); {better} marked cells in column {metrics[0]}.")


if __name__ == "__main__":
  main()
