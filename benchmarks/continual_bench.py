"""Continual updates against retraining: OPPU adapters updated on each user's newest items
(`config.continual`) against OPPU retrained on the whole history, same data, same task base.

  .venv/bin/python benchmarks/continual_bench.py --workdir=runs/results/hyper_lamp3 --last_items=4

For each finished seed workdir of `quality_seeds.py` (`<workdir>/seed<k>`, oppu_k0 done: the full
retrain), a copy `<workdir>/continual_last<N>/seed<k>` with `continual.last_items=N` redoes only
oppu_k0: version 1 on all but each user's last N items, then version 2 continued on those N.
Prints per seed and pooled over seeds: the metric of the updated adapters and of the retrained
ones (paired test), and the seconds per user of the update, of version 1 and of the retrain.
"""

from __future__ import annotations

import argparse
import os

import seed_copies

DROP = ("oppu_k0", "oppu_k0.json")  # what the copies redo


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a quality_seeds.py workdir")
  parser.add_argument("--last_items", type=int, default=4)
  args = parser.parse_args()
  seeds = seed_copies.seed_workdirs(args.workdir)
  pairs, rows, metric = [], [], None
  for src in seeds:
    seed = os.path.basename(src)
    dst = os.path.join(args.workdir, f"continual_last{args.last_items}", seed)
    seed_copies.copy_and_run(src, dst, {"continual.last_items": args.last_items}, drop=DROP)
    full, updated = seed_copies.read(src, "results.json"), seed_copies.read(dst, "results.json")
    metric = metric or next(iter(full["oppu_k0"]))
    costs = seed_copies.read(dst, "costs.json")  # (its "oppu_k0" entry is the copied retrain's)
    per_user = {k: costs[k]["seconds"] / costs[k]["users"]
                for k in ("oppu_k0", "oppu_k0 v1", "oppu_k0 update")}
    rows.append((seed, updated["oppu_k0"][metric], full["oppu_k0"][metric], per_user))
    pairs.append((seed, dst, "oppu_k0", src, "oppu_k0"))
  print(f"\nlast {args.last_items} items of each user new; {metric}; seconds per user\n")
  print(f"| seed | updated (v2) {metric} | retrained {metric} | update s | version 1 s | "
        "retrain s |")
  print("|---|---:|---:|---:|---:|---:|")
  for seed, up, full, s in rows:
    print(f"| {seed} | {up:.4f} | {full:.4f} | {s['oppu_k0 update']:.1f} | "
          f"{s['oppu_k0 v1']:.1f} | {s['oppu_k0']:.1f} |")
  _, tests, mu, mf = seed_copies.pooled_test(pairs)
  cells = [f"{m} {mu[m]:.4f} vs {mf[m]:.4f} (p = {t.p:.3g})" for m, t in tests.items()]
  print(f"\npooled over {len(rows)} seeds, updated vs retrained: " + "; ".join(cells))
  mean = lambda k: sum(r[3][k] for r in rows) / len(rows)
  print(f"seconds per user, mean: update {mean('oppu_k0 update'):.1f}, retrain "
        f"{mean('oppu_k0'):.1f} (x{mean('oppu_k0') / mean('oppu_k0 update'):.1f})")


if __name__ == "__main__":
  main()
