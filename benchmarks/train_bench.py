"""Per-user LoRA training, three ways side by side on the same data, with SmolLM2-135M.

  (a) our multi-user trainer, U users in U slots of one compiled step: as it runs by default (on a
      CPU the users are looped inside the step), and with the U users vmapped (as on accelerators);
  (b) our trainer one user at a time (slots=1);
  (c) the reference pattern: PyTorch + HF PEFT, a fresh `get_peft_model` per user on the base
      transformers model, a Trainer-style loop (AdamW, clip, linear warm-up/decay, loss on the
      answer tokens only), `save_pretrained` per user; once in f32, once under bf16 autocast.

Every method trains LoRA r=8, alpha 8, dropout 0.05 on q,v with AdamW lr 1e-4, weight decay 1e-2,
grad-norm clip 0.3, 10 % linear warm-up, batch 4, and writes each adapter to disk. The data is
synthetic text (a headline-generation prompt over random English words) tokenized with our
Tokenizer: each example is a prompt cut to 108-124 tokens plus a 2-6-token answer and EOS,
right-padded to --seq_len. All methods read the identical batches (`batch_for_step`).

Timing and counting (what the table means):
- tokens/s counts REAL tokens (attention mask), not padding; the padding share is printed.
- s/adapter is wall time per user, saving included, compilation excluded (the first step's excess
  over the median step is reported as "compile" instead: XLA pays it once per shape, not per user).
- Model FLOPs are the minimum LoRA training needs (benchmarks/flops.py says what is counted: not
  the logits the reference also computes at every position, +113 MFLOP/token here, which the loss
  does not need). The usual 6N convention would report ~1.47x these MFU numbers.
- MFU divides by the 2048^3 GEMM rate measured in the same run for the same dtype path: JAX f32,
  JAX bf16-in/f32-out (our bf16 path), torch f32, torch bf16 (what autocast runs).
- Peak memory: one fresh subprocess per U loads the model, resets the RSS high-water mark (so the
  GGUF loader's transient is not counted), trains one step of U users and reads VmHWM. Growth over
  the loaded model is compared with U x (adapter + AdamW state) + activations, where activations
  are XLA's planned temporary buffers for that step (`memory_analysis()`); a copy of the base per
  user would show as ~0.5 GiB more per user.

Methods (a) and (b) and the command line are here; flops.py holds the FLOP model and the GEMM
peak, train_workload.py the settings and data, train_reference.py method (c), train_memory.py the
memory runs, train_profile.py --profile, train_tables.py the output.

  .venv/bin/python benchmarks/train_bench.py            # ~12 min on the 2-core dev box, quiet
  .venv/bin/python benchmarks/train_bench.py --quick    # ~3 min, a smoke run
  .venv/bin/python benchmarks/train_bench.py --model=t5 # T5 6+6 x 512, the study's LoRA
  .venv/bin/python benchmarks/train_bench.py --memory_only --memory_batch_size 4
  taskset -c 1 .venv/bin/python benchmarks/train_bench.py --threads 1   # a busy box: per thread
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

# Results go to stdout as a table; keep library chatter out of it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a progress bar
warnings.filterwarnings("ignore")

import jax

from flops import data_counts, measure_gemm_peaks, model_flops
from oppu_jax.models.load import load_model
from oppu_jax.peft import hf_format
from oppu_jax.peft.lora import Lora
from oppu_jax.train import multi_user
from train_memory import memory_child, run_memory_child
from train_profile import profile_steps
from train_reference import run_reference
from train_tables import Row, describe_data, print_memory, print_table, progress_line
from train_workload import (ALPHA, CLIP, DROPOUT, LR, RANK, SEED, TARGETS, WARMUP, WEIGHT_DECAY,
                            make_plans)

def main():
  if "--model=t5" in sys.argv or " ".join(sys.argv).count("--model t5"):
    args = argparse.Namespace(model="t5")  # its own flags: t5_train_bench.parse_args
  else:
    args = parse_args()
  if args.model == "t5":  # the encoder-decoder's own benchmark (the study's LoRA on a T5)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import t5_train_bench

    t5_train_bench.main(sys.argv[1:])
    return
  if args.threads:
    # Before the XLA backend starts (first device query); memory runs inherit the environment.
    flags = [f"--xla_cpu_multi_thread_eigen={'false' if args.threads == 1 else 'true'}",
             f"intra_op_parallelism_threads={args.threads}"]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "")] + flags).strip()
  if args.memory_child:
    memory_child(args)
    return
  load = args.load_at_start = os.getloadavg()[0]
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
        f"threads {args.threads or 'all'}; load average at start {load:.1f}", flush=True)
  if load > 0.5:
    print("WARNING: the CPU is shared right now. Every number will be low and noisy, and the "
          "PyTorch rows worst of all: its OpenMP threads spin at barriers when oversubscribed "
          "(seen here: a 4.5 s step took 32 s). On a busy box compare per thread instead: "
          "taskset -c 1 ... --threads 1", flush=True)
  memory = []
  if not args.memory_only:
    plans = make_plans(args)
    describe_data(plans, args)
    peaks = measure_gemm_peaks(not args.skip_reference, args.threads)
    rows = run_ours(plans, args, peaks)
    if not args.skip_reference:
      rows += run_reference(plans, args, peaks, flops=rows[0].flops)  # same data, same FLOPs
    print_table(rows, plans, args)
    if args.profile:
      profile_steps(plans, args)
  if args.memory_users:
    memory = [run_memory_child(u, args) for u in args.memory_users]
    print_memory(memory, args)
  print(f"load average at end {os.getloadavg()[0]:.1f} (2 cores: anything above ~0.3 means "
        "other processes shared the CPU and the numbers are low and noisy)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "rows": [] if args.memory_only else rows,
                 "memory": memory}, f, indent=1, default=str)

def parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", choices=("smollm2", "t5"), default="smollm2",
                 help="t5: benchmarks/t5_train_bench.py (a 6+6-layer T5, the study's LoRA)")
  p.add_argument("--users", type=int, default=8, help="U: users, and slots of method (a)")
  p.add_argument("--examples_per_user", type=int, default=8)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--epochs", type=int, default=1)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--bf16_params", choices=("float32", "bfloat16"), default="bfloat16",
                 help="param_dtype of our bf16 rows (compute is bf16-in/f32-accumulate)")
  p.add_argument("--quick", action="store_true", help="2 users x 4 examples, memory U=1,8")
  p.add_argument("--memory_only", action="store_true")
  p.add_argument("--skip_reference", action="store_true", help="no PyTorch rows")
  p.add_argument("--memory_users", type=str, default="1,8,32",
                 help="U values for the peak-memory runs ('' to skip)")
  p.add_argument("--memory_batch_size", type=int, default=1,
                 help="rows per user in the memory runs (activations scale with U x this)")
  p.add_argument("--memory_limit_gb", type=float, default=12.0,
                 help="the trainer's memory budget in the memory runs (train.memory_budget_gb):"
                      " above it, the trainer recomputes activations (remat)")
  p.add_argument("--memory_vmapped", action="store_true",
                 help="memory runs with the U users vmapped (train.users_per_pass=U), as on "
                      "accelerators; default: the trainer's choice (looped on a CPU)")
  p.add_argument("--profile", action="store_true",
                 help="also trace one user's steps per dtype and print where the time goes")
  p.add_argument("--threads", type=int, default=0,
                 help="threads for XLA and torch (0 = all cores); 1 with taskset for a busy box")
  p.add_argument("--json", type=str, default="", help="also write the results here")
  p.add_argument("--memory_child", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.quick:
    args.users, args.examples_per_user, args.epochs = 2, 4, 2
    if args.memory_users == "1,8,32":
      args.memory_users = "1,8"
  args.memory_users = [int(u) for u in args.memory_users.split(",") if u.strip()]
  return args

# ----------------------------------------------------------------------------------------------
# (a) and (b): our trainer.

def run_ours(plans, args, peaks) -> list[Row]:
  rows = []
  for dtype in ("f32", "bf16"):
    if dtype == "f32":
      model, config = load_model(param_dtype="float32", compute_dtype="float32")
    else:
      model, config = load_model(param_dtype=args.bf16_params, compute_dtype="bfloat16")
    short = {"float32": "f32", "bfloat16": "bf16"}
    label = "f32" if dtype == "f32" else f"bf16 (params {short[args.bf16_params]})"
    # (a) as the trainer runs by default (on a CPU: the U users looped inside the one step), and
    # with the U users vmapped, as on accelerators.
    for method, slots, per_pass in (("(a) ours, U slots", len(plans), 0),
                                    ("(a) ours, U vmapped", len(plans), len(plans)),
                                    ("(b) ours, 1 slot", 1, 0)):
      rows.append(time_ours(model, config, plans, slots, method, label,
                            peaks["jax f32" if dtype == "f32" else "jax bf16"], per_pass))
    del model
    gc.collect()
  return rows

def time_ours(model, config, plans, slots, method, dtype_label, peak, users_per_pass) -> Row:
  peft = Lora(targets=TARGETS, rank=RANK, alpha=ALPHA, dropout=DROPOUT)
  train_config = multi_user.TrainConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY,
                                        clip_norm=CLIP, warmup_ratio=WARMUP, slots=slots,
                                        seed=SEED, users_per_pass=users_per_pass)
  step_times = []
  last = [0.0]

  def progress(report):
    # The step returns host losses, so it has finished when this runs: per-step wall time.
    now = time.perf_counter()
    step_times.append(now - last[0])
    last[0] = now

  with tempfile.TemporaryDirectory() as out:
    save = lambda r: hf_format.save_adapter(os.path.join(out, r.user_id), peft, r.adapter,
                                            model.weight_table())
    stats = {}
    last[0] = start = time.perf_counter()
    results = multi_user.train_users(model, peft, plans, train_config, on_user_done=save,
                                     progress=progress, stats=stats)
    wall = time.perf_counter() - start
  # The first step also traces and compiles; its excess over a typical step is compilation.
  # With a single step there is nothing to compare it with: it stays in (shown as "-").
  compile_s = float("nan")
  if len(step_times) > 1:
    compile_s = max(step_times[0] - float(np.median(step_times[1:])), 0.0)
  assert stats["step_compilations"] == 1, stats
  row = Row(method, slots, dtype_label, wall - np.nan_to_num(compile_s), compile_s, len(plans),
            data_counts(plans)["real"], model_flops(config, plans), peak,
            float(np.mean([r.losses[0] for r in results.values()])),
            float(np.mean([r.losses[-1] for r in results.values()])))
  progress_line(row)
  return row

if __name__ == "__main__":
  main()
