"""The personal adapters' strength at prediction time (`config.eval.adapter_scale`): each user's
trained adapter scaled toward the task-adapted base, predictions redone, nothing retrained.

  .venv/bin/python benchmarks/adapter_scale.py --workdir=runs/results/meaning_lamp2m \
      --scales=0.25,0.5,0.75

For each finished seed workdir of `quality_seeds.py` (`<workdir>/seed<k>`) and each scale s, a
copy `<workdir>/scale_<s>/seed<k>` whose config says `eval.adapter_scale=s` predicts the
personal settings again with the same adapters. One table: each setting's metric per scale (mean
over seeds; scale 1 is the seed workdirs themselves), then paired tests over every seed's queries
together of each personal setting at each scale against the same setting at 1 and against every
non-personal setting.
"""

from __future__ import annotations

import argparse
import os
import sys

import seed_copies


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a quality_seeds.py workdir")
  parser.add_argument("--scales", default="0.25,0.5,0.75")
  args = parser.parse_args()
  seeds = seed_copies.seed_workdirs(args.workdir)
  results = seed_copies.read(seeds[0], "results.json")
  personal = [s for s in results if s.startswith(("oppu", "hyper", "pag_oppu"))]
  others = [s for s in results if s not in personal]
  if not personal:
    sys.exit(f"error: {seeds[0]}: no personal setting in results.json")
  runs = {1.0: {os.path.basename(s): s for s in seeds}}
  for scale in [float(s) for s in args.scales.split(",")]:
    runs[scale] = {}
    for src in seeds:
      dst = os.path.join(args.workdir, f"scale_{scale:g}", os.path.basename(src))
      seed_copies.copy_and_run(src, dst, {"eval.adapter_scale": scale},
                               drop=tuple(f"{s}.json" for s in personal))
      runs[scale][os.path.basename(src)] = dst
  _print_means(runs, personal, others)
  _print_tests(runs, personal, others)


def _print_means(runs, personal, others) -> None:
  metrics = list(seed_copies.read(next(iter(runs[1.0].values())), "results.json")[personal[0]])
  print("\n| scale | setting | " + " | ".join(metrics) + " |")
  print("|---:|---|" + "---:|" * len(metrics))
  for scale, workdirs in sorted(runs.items()):
    for name in (personal if scale != 1.0 else others + personal):
      values = [seed_copies.read(w, "results.json")[name] for w in workdirs.values()]
      means = [sum(v[m] for v in values) / len(values) for m in metrics]
      print(f"| {scale:g} | {name} | " + " | ".join(f"{x:.4f}" for x in means) + " |")


def _print_tests(runs, personal, others) -> None:
  print("\npaired tests over every seed's queries (a against b):\n")
  print("| a | b | metric | a | b | p |")
  print("|---|---|---|---:|---:|---:|")
  for scale, workdirs in sorted(runs.items()):
    for name in personal:
      against = others + ([name] if scale != 1.0 else [])
      for other in against:
        pairs = [(seed, workdirs[seed], name, runs[1.0][seed], other) for seed in workdirs]
        _, tests, ma, mb = seed_copies.pooled_test(pairs)
        for metric, test in tests.items():
          print(f"| {name} @ {scale:g} | {other} @ 1 | {metric} | {ma[metric]:.4f} | "
                f"{mb[metric]:.4f} | {test.p:.2g} |")


if __name__ == "__main__":
  main()
