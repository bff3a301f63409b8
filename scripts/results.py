"""Makes the results the README quotes: each named run's own output files under
docs/results/<name>/, with the command, commit, machine, load, versions and wall time beside them.

  .venv/bin/python scripts/results.py lamp3 lamp2m lamp5   # named runs; --list shows them all

A run starts from an empty workdir (runs/results/<name>) so its wall time is the whole command's;
`--resume` keeps the workdir (only missing stages run; the wall time then says so). What the
command printed is kept as output.txt and the files it wrote (results.md, results.json,
significance.json, analysis/) are copied as they are. run.md records how they were made. Time
runs on a quiet machine: run.md notes the load average before and after, nothing more.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = [sys.executable, "-m", "oppu_jax.main"]
SEEDS = [sys.executable, "benchmarks/quality_seeds.py"]
PIPELINE = [sys.executable, "benchmarks/pipeline_bench.py"]
CHECK = [sys.executable, "-m", "oppu_jax.compile_check"]
# The rows the meaning-cued data is judged by (issue 28): every RAG row, OPPU with and without one
# retrieved item, and OPPU against each of them pooled over the seeds.
MEANING = ["--config.settings=non_personalized,rag_k1,rag_k2,rag_k4,oppu_k0,oppu_k1",
           "--versus=oppu_k0:non_personalized,oppu_k0:rag_k1,oppu_k0:rag_k2,oppu_k0:rag_k4,"
           "oppu_k1:rag_k1"]
TOPOLOGIES = "v5e-8,v5e-256,v5p-128,8xH100"

# name -> (command, what it is). A run of oppu_jax.main, quality_seeds.py or pipeline_bench.py
# gets --workdir=runs/results/<name> appended; other commands only print.
RUNS = {
    "lamp3": (MAIN + ["--config=configs/lamp3.py"],
              "the default LaMP_3 run (README's first command)"),
    "lamp2m": (MAIN + ["--config=configs/lamp2m.py"], "LaMP_2M, classification"),
    "lamp5": (MAIN + ["--config=configs/lamp5.py"], "LaMP_5, generation"),
    **{f"{t}_min50": (MAIN + [f"--config=configs/{t}.py", "--config.task_adapt.min_steps=50"],
                      f"{t} with task adaptation of at least 50 steps (issue 28's candidate)")
       for t in ("lamp2m", "lamp3", "lamp5")},
    "oracles": ([sys.executable, "benchmarks/oracles.py", "LaMP_2M", "LaMP_3", "LaMP_5"],
                "the generator's oracles on those three runs' data"),
    "oracles_meaning": ([sys.executable, "benchmarks/oracles.py", "LaMP_2M:meaning",
                         "LaMP_3:meaning", "LaMP_5:meaning", "--seeds=0,1,2"],
                        "the meaning-cued generator's oracles (recipe meaning), data seeds 0-2"),
    "lamp3_grid": (MAIN + ["--config=configs/lamp3.py", "--config.settings=all"],
                   "the whole Table 1 grid on LaMP_3"),
    "lamp3_seeds": (SEEDS + ["--config=configs/lamp3.py", "--seeds=0,1,2"],
                    "LaMP_3 over data seeds 0, 1, 2"),
    "hyper_lamp3": (SEEDS + ["--config=configs/lamp3.py", "--seeds=0,1,2",
                             "--config.settings=non_personalized,oppu_k0,hyper_k0,oppu_warm_k0",
                             "--versus=hyper_k0:non_personalized,hyper_k0:oppu_k0,"
                             "oppu_warm_k0:oppu_k0"],
                    "hypernetwork adapters and warm starts on LaMP_3, data seeds 0, 1, 2"),
    "hyper_lamp2m": (SEEDS + ["--config=configs/lamp2m.py", "--seeds=0,1,2",
                              "--config.settings=non_personalized,oppu_k0,hyper_k0,oppu_warm_k0",
                              "--versus=hyper_k0:non_personalized,hyper_k0:oppu_k0,"
                              "oppu_warm_k0:oppu_k0"],
                     "hypernetwork adapters and warm starts on LaMP_2M, data seeds 0, 1, 2"),
    "meaning_lamp2m": (SEEDS + ["--config=configs/lamp2m.py:meaning", "--seeds=0,1,2"] + MEANING,
                    "LaMP_2M on the meaning-cued data (recipe meaning), data seeds 0, 1, 2"),
    "meaning_lamp3": (SEEDS + ["--config=configs/lamp3.py:meaning", "--seeds=0,1,2"] + MEANING,
                    "LaMP_3 on the meaning-cued data (recipe meaning), data seeds 0, 1, 2"),
    "meaning_lamp5": (SEEDS + ["--config=configs/lamp5.py:meaning", "--seeds=0,1,2"] + MEANING,
                    "LaMP_5 on the meaning-cued data (recipe meaning), data seeds 0, 1, 2"),
    **{f"meaning_{t}_min50": (SEEDS + [f"--config=configs/{t}.py:meaning", "--seeds=0,1,2"]
                              + MEANING + ["--config.task_adapt.min_steps=50"],
                              f"meaning_{t} with task adaptation of at least 50 steps")
       for t in ("lamp2m", "lamp3", "lamp5")},
    "warm_epochs_lamp3": ([sys.executable, "benchmarks/warm_epochs.py",
                           "--workdir=runs/results/hyper_lamp3", "--epochs=1,2"],
                          "oppu_warm_k0 at 1 and 2 epochs against cold oppu_k0 (needs "
                          "runs/results/hyper_lamp3)"),
    "continual_lamp3": ([sys.executable, "benchmarks/continual_bench.py",
                         "--workdir=runs/results/hyper_lamp3", "--last_items=4"],
                        "OPPU adapters updated on each user's last 4 items against retrained on "
                        "the whole history (needs runs/results/hyper_lamp3)"),
    "analyses": (MAIN + ["--config=configs/analysis.py:LaMP_3,all"],
                 "the papers' analyses on LaMP_3"),
    "study_lamp2m": (MAIN + ["--config=configs/study.py:LaMP_2M"],
                     "the PEFT-vs-RAG study's grid on LaMP_2M"),
    "study_lamp5": (MAIN + ["--config=configs/study.py:LaMP_5"],
                    "the PEFT-vs-RAG study's grid on LaMP_5"),
    "scale": ([sys.executable, "benchmarks/scale.py"],
              "the cost model: measured steps at 1/2/4 devices, projected to TPU/GPU"),
    "pipeline_bench": (PIPELINE + ["--profile"],
                       "the default LaMP_3 run against the reference pattern, with the profile"),
    "pipeline_profile": (PIPELINE + ["--profile", "--skip_reference"],
                         "where the default LaMP_3 run's time goes, per stage"),
    "serve_check": ([sys.executable, "-m", "oppu_jax.serve.check", "--workdir=runs/lamp3"],
                    "the server's answers to every test query of the default run against its "
                    "predictions (needs runs/lamp3)"),
    "serve_bench": ([sys.executable, "benchmarks/serve_bench.py", "--workdir=runs/lamp3",
                     "--json=runs/results/serve_bench/serve_bench.json"],
                    "the server under 1/8/32 clients over 8 and 1,000 adapters, against one user "
                    "per step and HF PEFT (needs the default run's runs/lamp3)"),
    "jax_versions": (["bash", "benchmarks/jax_versions.sh"],
                     "one training step under each jax minor release the range allowed"),
    "compile_llama2_7b": (CHECK + ["--model=llama-2-7b", "--config=configs/lamp3.py",
                                   f"--topology={TOPOLOGIES}", "--model_axes=4,8",
                                   "--json=runs/results/compile_llama2_7b/compile_check.json"],
                          "Llama-2-7B's programs compiled for TPU slices and 8 H100s (OPPU recipe; "
                          "the planner tries model axes 4 and 8 only)"),
    "compile_llama2_7b_more": (
        CHECK + ["--model=llama-2-7b", "--config=configs/lamp3.py", "--topology=v4-32,v6e-8",
                 "--model_axes=4,8",
                 "--json=runs/results/compile_llama2_7b_more/compile_check.json"],
        "Llama-2-7B's programs compiled for the other TPU slices (v4-32, v6e-8)"),
    "compile_llama2_7b_eval64": (
        CHECK + ["--model=llama-2-7b", "--config=configs/lamp3.py", "--topology=v5e-256",
                 "--slots=64", "--mesh=64x4", "--programs=score,beam",
                 "--config.eval.batch_size=64"],
        "Llama-2-7B's evaluation on a v5e-256 with 64 rows per batch (one per users position)"),
    "scale_compiled_7b": ([sys.executable, "benchmarks/scale.py", "--task=LaMP_3",
                           "--compiled=docs/results/compile_llama2_7b/compile_check.json"],
                          "users per hour from Llama-2-7B's compiled multi-user step"),
    "scale_compiled_t5": ([sys.executable, "benchmarks/scale.py", "--task=LaMP_5",
                           "--compiled=docs/results/compile_flan_t5_xxl/compile_check.json"],
                          "users per hour from FlanT5-XXL's compiled multi-user step"),
    "compile_flan_t5_xxl": (CHECK + ["--model=flan-t5-xxl",
                                     "--config=configs/study.py:LaMP_5,study",
                                     "--answer_tokens=126",
                                     "--topology=v5e-8,v5p-128,v6e-8,8xH100", "--model_axes=4,8",
                                     "--json=runs/results/compile_flan_t5_xxl/compile_check.json"],
                            "FlanT5-XXL's programs compiled for TPU slices and 8 H100s (the "
                            "study's recipe; the planner tries model axes 4 and 8 only)"),
}
FILES = ("results.md", "results.json", "significance.json", "timings.json", "analysis",
         "compile_check.json", "serve_bench.json")
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "transformers",
             "tokenizers", "torch", "peft", "starlette", "uvicorn", "httpx")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", help="runs to make (see --list)")
  parser.add_argument("--list", action="store_true")
  parser.add_argument("--resume", action="store_true", help="keep the run's workdir")
  parser.add_argument("--out", default=os.path.join(REPO, "docs", "results"))
  args = parser.parse_args()
  unknown = [n for n in args.names if n not in RUNS]
  if args.list or not args.names or unknown:
    if unknown:
      print(f"error: unknown run(s) {', '.join(unknown)}", file=sys.stderr)
    for name, (cmd, what) in RUNS.items():
      print(f"{name:12s} {what}: {' '.join(cmd[1:])}")
    sys.exit(2 if unknown or not (args.list or args.names) else 0)
  for name in args.names:
    make(name, args.out, args.resume)


def make(name: str, out_root: str, resume: bool) -> None:
  cmd, what = RUNS[name]
  workdir = os.path.join("runs", "results", name)
  if not resume:
    shutil.rmtree(os.path.join(REPO, workdir), ignore_errors=True)
  if cmd[:3] == MAIN or cmd[:2] in (SEEDS, PIPELINE):
    cmd = cmd + [f"--workdir={workdir}"]
  shown = " ".join([".venv/bin/python", *cmd[1:]])
  print("$", shown, flush=True)
  made_at = _commit()  # before the run: the code it ran, whatever is committed meanwhile
  load_before = os.getloadavg()
  start = time.time()
  done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wall = time.time() - start
  load_after = os.getloadavg()
  if done.returncode:
    sys.exit(f"error: {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
  out = os.path.join(out_root, name)
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  with open(os.path.join(out, "output.txt"), "w") as f:
    f.write(done.stdout)
  for f in FILES:
    src = os.path.join(REPO, workdir, f)
    if os.path.isdir(src):
      shutil.copytree(src, os.path.join(out, f))
    elif os.path.exists(src):
      shutil.copy(src, out)
  with open(os.path.join(out, "run.md"), "w") as f:
    f.write(_record(name, what, shown, made_at, wall, load_before, load_after, resume))
  print(done.stdout)
  print(f"{name}: {_minutes(wall)} wall; kept in {os.path.relpath(out, REPO)}/", flush=True)


def _commit() -> str:
  """HEAD, and whether the code differs from it (docs being written meanwhile do not count)."""
  dirty = _git("status", "--porcelain", "--", "oppu_jax", "configs", "scripts", "benchmarks",
               "pyproject.toml")
  return _git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")


def _record(name, what, shown, commit, wall, load_before, load_after, resume) -> str:
  versions = ", ".join(f"{lib} {_version(lib)}" for lib in LIBRARIES)
  return "\n".join([
      f"# {name}: {what}", "",
      "```", f"$ {shown}", "```", "",
      f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
      f"- commit: {commit}",
      f"- machine: {_cpu()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB, "
      f"{platform.system()} {platform.release()}",
      f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}",
      f"- wall time: {_minutes(wall)}" + (" (resumed: only missing stages ran)" if resume else ""),
      f"- python {platform.python_version()}, {versions}", ""])


def _git(*args: str) -> str:
  return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def _version(lib: str) -> str:
  try:
    return importlib.metadata.version(lib)
  except importlib.metadata.PackageNotFoundError:
    return "absent"


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


if __name__ == "__main__":
  main()
