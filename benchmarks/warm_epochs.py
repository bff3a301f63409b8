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
import os

import seed_copies

DROP = ("oppu_warm_k0", "oppu_warm_k0.json")  # what the copies redo


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a quality_seeds.py workdir")
  parser.add_argument("--epochs", default="1,2")
  args = parser.parse_args()
  seeds = seed_copies.seed_workdirs(args.workdir)
  rows = []  # (seed, setting, epochs, metric value, seconds per user)
  metric = None
  for src in seeds:
    seed, config = os.path.basename(src), seed_copies.read(src, "config.json")
    results = seed_copies.read(src, "results.json")
    metric = metric or next(iter(results["oppu_k0"]))
    for name in ("oppu_k0", "oppu_warm_k0"):
      rows.append(_row(seed, name, config["train"]["epochs"], src, metric))
    for epochs in [int(e) for e in args.epochs.split(",")]:
      dst = os.path.join(args.workdir, f"warm_e{epochs}", seed)
      seed_copies.copy_and_run(src, dst, {"hyper.warm_epochs": epochs}, drop=DROP)
      rows.append(_row(seed, "oppu_warm_k0", epochs, dst, metric))
  _print(rows, metric)


def _row(seed: str, name: str, epochs: int, workdir: str, metric: str):
  results = seed_copies.read(workdir, "results.json")
  costs = seed_copies.read(workdir, "costs.json")
  return (seed, name, epochs, results[name][metric],
          costs[name]["seconds"] / costs[name]["users"])


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


if __name__ == "__main__":
  main()
