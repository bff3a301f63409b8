"""The generator's oracles on each task config's default data: what a predictor scores that knows
only the text, the user's history (the best a personal model can learn from it), or the user's
true habit. The bounds the README's result tables are read against.

  .venv/bin/python benchmarks/oracles.py LaMP_2M LaMP_3 LaMP_5
  .venv/bin/python benchmarks/oracles.py LaMP_2M:meaning LaMP_3:meaning LaMP_5:meaning --seeds=0,1,2

A task may name its recipe after a colon (configs/lampN.py:RECIPE); --seeds gives the mean over
data seeds (the default: the config's seed).

Scored over every query of the data a default run generates (`config.data.synth`, seed
`config.seed`), not only the test users'.
"""

from __future__ import annotations

import sys

from oppu_jax import config as config_lib
from oppu_jax.data import synth


def main(args: list[str]) -> None:
  seeds = [a for a in args if a.startswith("--seeds=")]
  tasks = [a for a in args if not a.startswith("--")] or ["LaMP_2M", "LaMP_3", "LaMP_5"]
  print("| task | metric | text only | from the user's history | the user's true habit |"
        " query phrasings in the history |")
  print("|---|---|---:|---:|---:|---:|")
  for spec in tasks:
    task, _, recipe = spec.partition(":")
    c = config_lib.for_task(task, recipe or None)
    runs = [int(s) for s in seeds[-1].split("=")[1].split(",")] if seeds else [c.seed]
    reports = [synth.oracle_report(task, seed=seed, **c.data.synth.to_dict()) for seed in runs]
    overlap = sum(r["query_history_overlap"]["mean"] for r in reports) / len(reports)
    for metric in reports[0]:
      if metric == "query_history_overlap":
        continue
      mean = {k: sum(r[metric][k] for r in reports) / len(reports) for k in reports[0][metric]}
      print(f"| {spec} | {metric} | {mean['non_personalized']:.3f} | "
            f"{mean['from_history']:.3f} | {mean['personalized']:.3f} | {overlap:.2f} |")


if __name__ == "__main__":
  main(sys.argv[1:])
