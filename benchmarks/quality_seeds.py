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
  parser.add_argument("--versus", default="",
                      help="pairs 'a:b,...' to test against each other, pooled over the seeds' "
                           "queries (paired t-test), e.g. hyper_k0:oppu_k0")
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
  workdirs = {seed: os.path.join(args.workdir, f"seed{seed}") for seed in seeds}
  _print_costs(workdirs)
  _print_oracles(workdirs)
  if args.versus:
    _print_pooled_tests(workdirs, [tuple(p.split(":")) for p in args.versus.split(",")])


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


def _print_costs(workdirs: dict) -> None:
  """Seconds per user of each setting's adapters (costs.json) and the hypernetwork's one-time
  training (hyper_B.json), with the users after which it pays for itself against oppu_k0."""
  costs = {}
  for seed, w in workdirs.items():
    path = os.path.join(w, "costs.json")
    if os.path.exists(path):
      with open(path) as f:
        costs[seed] = json.load(f)
  if not costs:
    return
  names = list(next(iter(costs.values())))
  print("\nseconds per user of the adapters (training; hyper_k0: generation), per seed:\n")
  print("| setting | " + " | ".join(f"seed {s}" for s in costs) + " | mean |")
  print("|---|" + "---:|" * (len(costs) + 1))
  for name in names:
    per = [c[name]["seconds"] / c[name]["users"] for c in costs.values() if name in c]
    print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in per) + f" | {statistics.mean(per):.2f} |")
  for seed, w in workdirs.items():
    path = os.path.join(w, "hyper_B.json")
    if not os.path.exists(path) or seed not in costs:
      continue
    with open(path) as f:
      h = json.load(f)
    c = costs[seed]
    line = (f"seed {seed}: hypernetwork trained on {h['training_users']} users in "
            f"{h['seconds']:.1f} s (loss {h['loss_first_steps']:.3f} -> "
            f"{h['loss_last_steps']:.3f})")
    if "oppu_k0" in c and "hyper_k0" in c:
      saved = (c["oppu_k0"]["seconds"] / c["oppu_k0"]["users"]
               - c["hyper_k0"]["seconds"] / c["hyper_k0"]["users"])
      line += f"; break-even vs oppu_k0 after {h['seconds'] / saved:.0f} new users"
    print(line)


def _print_oracles(workdirs: dict) -> None:
  """The generator's oracles on each seed's test users (generated data only): what knowing only
  the text, the user's history, or the user's true habit scores on the queries the table scores."""
  sys.path.insert(0, REPO)
  from oppu_jax.data import synth

  reports = []
  for w in workdirs.values():
    with open(os.path.join(w, "config.json")) as f:
      config = json.load(f)
    if config["data"]["path"]:
      return
    predictions = os.path.join(w, "predictions")
    with open(os.path.join(predictions, sorted(os.listdir(predictions))[0])) as f:
      users = {p["id"].rsplit("_", 1)[0] for p in json.load(f)["golds"]}  # every setting's
    reports.append(synth.oracle_report(config["task"], users=users, seed=config["seed"],
                                       **config["data"]["synth"]))
  names = {"non_personalized": "text only", "from_history": "from the user's history",
           "personalized": "the user's true habit"}
  metrics = [m for m in reports[0] if m != "query_history_overlap"]
  print("\nthe generator's oracles on the same test queries, mean ± sd over seeds:\n")
  print("| oracle | " + " | ".join(metrics) + " |")
  print("|---|" + "---:|" * len(metrics))
  for key, name in names.items():
    cells = []
    for m in metrics:
      values = [r[m][key] for r in reports]
      sd = statistics.stdev(values) if len(values) > 1 else 0.0
      cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f}")
    print(f"| {name} | " + " | ".join(cells) + " |")


def _print_pooled_tests(workdirs: dict, pairs) -> None:
  """a vs b on every seed's test queries together (ids prefixed by the seed): the paired test
  of results.md, on 3x the queries."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import seed_copies

  print(f"\npooled over seeds {', '.join(map(str, workdirs))}, paired:\n")
  for a, b in pairs:
    _, tests, ma, mb = seed_copies.pooled_test([(s, w, a, w, b) for s, w in workdirs.items()])
    cells = [f"{m} {ma[m]:.4f} vs {mb[m]:.4f} (p = {t.p:.3g})" for m, t in tests.items()]
    print(f"- {a} vs {b}: " + "; ".join(cells))


if __name__ == "__main__":
  main()
