"""The generator's oracles on each task config's default data: what a predictor scores that knows
only the text, the user's history (the best a personal model can learn from it), or the user's
true habit. The bounds the README's result tables are read against.

  .venv/bin/python benchmarks/oracles.py LaMP_2M LaMP_3 LaMP_5

Scored over every query of the data a default run generates (`config.data.synth`, seed
`config.seed`), not only the test users'.
"""

from __future__ import annotations

import sys

from oppu_jax import config as config_lib
from oppu_jax.data import synth


def main(tasks: list[str]) -> None:
  print("| task | metric | text only | from the user's history | the user's true habit |")
  print("|---|---|---:|---:|---:|")
  for task in tasks:
    c = config_lib.for_task(task)
    report = synth.oracle_report(task, seed=c.seed, **c.data.synth.to_dict())
    for metric, by in report.items():
      if metric == "query_history_overlap":
        continue
      print(f"| {task} | {metric} | {by['non_personalized']:.3f} | {by['from_history']:.3f} | "
            f"{by['personalized']:.3f} |")


if __name__ == "__main__":
  main(sys.argv[1:] or ["LaMP_2M", "LaMP_3", "LaMP_5"])
