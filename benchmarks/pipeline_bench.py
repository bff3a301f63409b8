"""The default LaMP_3 run, whole, against the reference pattern (PyTorch + HF PEFT, one user at a
time) on the same data and recipe: per stage wall time, real tokens/s, the ratio, both MAEs.

  .venv/bin/python benchmarks/pipeline_bench.py                 # both, one after the other
  .venv/bin/python benchmarks/pipeline_bench.py --skip_reference
  .venv/bin/python benchmarks/pipeline_bench.py --config=configs/lamp3.py --threads=2
  .venv/bin/python benchmarks/pipeline_bench.py --skip_reference --profile   # + where time goes

Ours is `oppu_jax.pipeline.run.run` (what `python -m oppu_jax.main` runs) on a fresh workdir; its
stages are read from the timings.json the run writes. The reference (pipeline_reference.py) then
trains and scores on that workdir's data, the same plans and batches. Both get --threads cores
(XLA's CPU client and torch.set_num_threads); run it on a quiet machine, the load average is
printed. Real tokens are the unpadded tokens of the training batches, the same for both sides.
--profile also traces a few steps of each of our stages and dumps XLA's HLO, then prints
pipeline_profile.py's breakdown (the trace windows add a few seconds to our stages).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file("config", "configs/lamp3.py", "the run's config")
_THREADS = flags.DEFINE_integer("threads", 2, "cores for each side")
_SKIP_REFERENCE = flags.DEFINE_bool("skip_reference", False, "time ours only")
_SKIP_OURS = flags.DEFINE_bool("skip_ours", False, "reuse --workdir's finished run of ours "
                               "(its timings.json, its results) and time the reference only")
_WORKDIR = flags.DEFINE_string("workdir", "", "our run's workdir (default: a fresh temp dir)")
_JSON = flags.DEFINE_string("json", "", "also write both sides' stages and MAEs here")
_PROFILE = flags.DEFINE_bool("profile", False, "trace our stages; print where their time goes")


@dataclasses.dataclass
class Work:
  """What both sides train and score: our run's plans, query rows and label ids."""

  task_plan: object
  user_plans: list
  query_rows: dict  # setting -> [(user id, query id, prompt ids)]
  choices: list


def main(argv):
  del argv
  # Before jax starts: XLA:CPU's thread pool follows the visible cores.
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:_THREADS.value]))
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="pipeline_bench_")
  config = _CONFIG.value
  if _PROFILE.value:  # XLA reads its flags when the backend starts: before any computation
    config.trace.dir = os.path.join(workdir, "trace")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_dump_to="
                               + os.path.join(workdir, "hlo") + " --xla_dump_hlo_as_text")
  import jax
  from oppu_jax.eval import metrics
  from oppu_jax.pipeline import run
  from oppu_jax.pipeline.experiment import golds, setup

  config.progress = False
  logging.set_verbosity(logging.WARNING)  # the table, not the stages' logs (they are in the
  # workdir's timings.json; run oppu_jax.main for them)
  load = os.getloadavg()[0]
  print(f"load average (1 min) at start: {load:.2f}; cores used per side: {_THREADS.value}; "
        f"jax {jax.__version__}", flush=True)
  start = time.perf_counter()
  if not _SKIP_OURS.value:
    run.run(config, workdir)
  with open(os.path.join(workdir, "timings.json")) as f:
    ours = json.load(f)
  with open(os.path.join(workdir, "results.json")) as f:
    ours_metrics = json.load(f)
  wall = ours["seconds"] if _SKIP_OURS.value else time.perf_counter() - start
  print(f"ours: {wall:.1f} s wall, workdir {workdir}", flush=True)
  if _PROFILE.value:
    from pipeline_profile import breakdown_table
    print(breakdown_table(workdir, config.trace.dir, os.path.join(workdir, "hlo")), flush=True)
  sides = {"ours": {"seconds": wall, "stages": ours["stages"],
                    "metrics": ours_metrics}}
  if not _SKIP_REFERENCE.value:
    from pipeline_reference import reference_plans, run_reference
    exp = setup(config, workdir)
    work = _work(exp, *reference_plans(exp))
    start = time.perf_counter()
    ref = run_reference(exp, _THREADS.value, work)
    wall = time.perf_counter() - start
    gold = golds(exp.test_users)
    sides["reference"] = {"seconds": wall, "stages": ref["stages"], "metrics": {
        s: metrics.evaluate(exp.task.name, gold, p) for s, p in ref["predictions"].items()}}
  print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")
  print(_table(sides))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(sides, f, indent=2)


def _work(exp, task_plan, user_plans) -> Work:
  from oppu_jax.pipeline.predict import query_rows

  rows = {}
  for setting in exp.settings:
    ids, indexed = query_rows(exp, setting, exp.test_users)
    rows[setting] = [(exp.test_users[i].id, qid, prompt) for qid, (i, prompt) in zip(ids, indexed)]
  choices = [exp.base_model.conventions.choice(label, exp.tokenizer) for label in exp.task.labels]
  return Work(task_plan, user_plans, rows, choices)


def _stage_key(name: str) -> str:
  return name.split(":")[0] + (":" + name.split(":")[1].split()[0] if "stage 3" in name else "")


def _table(sides) -> str:
  """Per stage: each side's seconds and real tokens/s, and reference seconds / ours."""
  ours = {_stage_key(s["stage"]): s for s in sides["ours"]["stages"]}
  ref = {_stage_key(s["stage"]): s for s in sides.get("reference", {}).get("stages", [])}
  lines = [f"{'stage':34} {'ours s':>8} {'ref s':>8} {'ours tok/s':>11} {'ref tok/s':>10} "
           f"{'ref/ours':>9}", "-" * 85]
  for key, stage in ours.items():
    other = ref.get(key, {})
    ratio = other["seconds"] / stage["seconds"] if other else float("nan")
    lines.append(f"{stage['stage'][:34]:34} {stage['seconds']:8.1f} "
                 f"{other.get('seconds', float('nan')):8.1f} "
                 f"{stage.get('real_tokens_per_s', float('nan')):11.1f} "
                 f"{other.get('real_tokens_per_s', float('nan')):10.1f} {ratio:9.2f}")
  whole_ref = sides.get("reference", {}).get("seconds", float("nan"))
  lines.append(f"{'whole run':34} {sides['ours']['seconds']:8.1f} {whole_ref:8.1f} {'':>11} "
               f"{'':>10} {whole_ref / sides['ours']['seconds']:9.2f}")
  for name, side in sides.items():
    for setting, m in side["metrics"].items():
      lines.append(f"{name} {setting}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
