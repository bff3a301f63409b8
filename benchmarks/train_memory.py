"""train_bench.py's peak-memory rows: one fresh process per U loads the model, resets the RSS
high-water mark, trains one step of U users and reports (train_bench.py's docstring)."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from oppu_jax.models.load import load_model
from oppu_jax.peft.lora import Lora
from oppu_jax.train import multi_user, user_batches
from train_workload import ALPHA, CLIP, DROPOUT, LR, RANK, SEED, TARGETS, WARMUP, WEIGHT_DECAY

# The child is train_bench.py itself with its hidden --memory_child flag (main() then runs
# memory_child below), so it starts with the same XLA thread flags and quiet libraries.
_TRAIN_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_bench.py")


def run_memory_child(users: int, args) -> dict:
  cmd = [sys.executable, _TRAIN_BENCH, "--memory_child", str(users),
         "--threads", str(args.threads),
         "--seq_len", str(args.seq_len), "--memory_batch_size", str(args.memory_batch_size),
         "--memory_limit_gb", str(args.memory_limit_gb)] + (
             ["--memory_vmapped"] if args.memory_vmapped else [])
  print(f"memory run U={users} ...", flush=True)
  done = subprocess.run(cmd, capture_output=True, text=True)
  for line in done.stdout.splitlines():
    if line.startswith("MEMORY_JSON "):
      return json.loads(line.removeprefix("MEMORY_JSON "))
  return {"users": users, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}

def memory_child(args):
  """Loads the model, resets the RSS high-water mark, trains one step of U users, reports."""
  users, rows = args.memory_child, args.memory_batch_size
  runtime_rss = _proc_status("VmRSS")  # python + jax + our imports, before any weights
  # Each run compiles the step for XLA's plan, then in train_users (and once more for the remat
  # plan if the trainer chose remat): the persistent cache makes the repeats lookups.
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="train_bench_xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  rng = np.random.default_rng(SEED)
  from oppu_jax.data.batching import Example

  def example():
    tokens = rng.integers(3, 40000, args.seq_len).astype(np.int32)
    mask = np.zeros(args.seq_len, bool)
    mask[-4:] = True  # a 4-token answer
    return Example(tokens, mask)

  plans = [user_batches.plan_user(f"user{u}", [example() for _ in range(rows)], batch_size=rows,
                                  epochs=1, seq_buckets=(args.seq_len,), target_buckets=(8,))
           for u in range(users)]
  peft = Lora(targets=TARGETS, rank=RANK, alpha=ALPHA, dropout=DROPOUT)
  # The trainer itself decides on remat: it compiles the step and recomputes activations only if
  # XLA's plan exceeds the budget.
  config = multi_user.TrainConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY, clip_norm=CLIP,
                                  warmup_ratio=WARMUP, slots=users, seed=SEED,
                                  memory_budget_gb=args.memory_limit_gb,
                                  users_per_pass=users if args.memory_vmapped else 0)
  model, model_config = load_model(param_dtype="float32", compute_dtype="float32")
  no_remat_plan = _xla_memory_plan(model, peft, config, plans[0], users, remat=False)
  gc.collect()
  loaded_rss = _proc_status("VmRSS")
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS: the loader's transient peak is not training's
  start = time.perf_counter()
  stats = {}
  multi_user.train_users(model, peft, plans, config, stats=stats)
  seconds = time.perf_counter() - start
  peak_rss = _proc_status("VmHWM")  # before any further compilation below
  remat = any(stats["remat"].values())
  # The remat plan is compiled only when the trainer chose remat (it is what then ran).
  plan = _xla_memory_plan(model, peft, config, plans[0], users, remat=True) if remat else (
      no_remat_plan)
  one = peft.init(model.weight_table(), jax.random.PRNGKey(0))
  adapter_bytes = sum(x.nbytes for x in jax.tree.leaves(one))
  base_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx_state(model)))
  out = {
      "users": users, "rows_per_user": rows, "remat": remat,
      "runtime_rss": runtime_rss, "loaded_rss": loaded_rss, "peak_rss": peak_rss,
      "maxrss_incl_load": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "base_bytes": base_bytes, "adapter_bytes": adapter_bytes,
      # AdamW keeps two f32 moments per adapter parameter (plus a scalar count).
      "optimizer_bytes": 2 * adapter_bytes,
      "xla_temp": plan["temp"] if plan else None,
      "xla_temp_without_remat": no_remat_plan["temp"] if remat and no_remat_plan else None,
      "seconds": seconds,
  }
  print("MEMORY_JSON " + json.dumps(out))

def nnx_state(model):
  from flax import nnx

  return nnx.state(model)

def _xla_memory_plan(model, peft, config, plan, users, remat) -> dict | None:
  """XLA's buffer plan for the U-user step, from compiling it without running it.

  Uses the trainer's internal step object (benchmark introspection, not API): if that changes,
  the memory table shows no plan rather than failing.
  """
  try:
    steps = multi_user._StepProgram(model, peft, config, None, plan.total_steps)
    slots = steps.fresh_slots(users)
    batch = user_batches.batch_for_step(plan, 0, SEED)
    batches = {k: np.stack([v] * users) for k, v in batch.items()}
    compiled = steps._jits[remat].lower(steps.base, slots, batches).compile()
    analysis = compiled.memory_analysis()
    return {"temp": analysis.temp_size_in_bytes, "arguments": analysis.argument_size_in_bytes}
  except Exception as e:  # noqa: BLE001 -- introspection only
    print(f"no XLA memory plan: {type(e).__name__}: {e}", file=sys.stderr)
    return None

def _proc_status(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  return 0
