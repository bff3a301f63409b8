"""Cost model: how long, and how many chip-hours, OPPU takes for 100 / 10,000 / 1,000,000 users of
a LaMP task on a TPU v5e-256 and on 64 x H100, from measured step times and model FLOPs.

Measured here (one subprocess per device count, SmolLM2-135M, the multi-user step vmapped over
one user per device, users split over a (users, 1) mesh of virtual CPU devices, LoRA r8 q,v,
batch 4 x 128 tokens of train_bench.py's synthetic data): the median step time at 1, 2 and 4 local
devices, and flops.py's minimum model FLOPs of each step. The 1-device run calibrates the
model's one free number, the achieved fraction of peak (MFU = model FLOP/s / the GEMM rate
measured in the same process); the check then predicts the 2- and 4-device runs two ways:
  - independent chips (what a TPU/GPU mesh is): each device keeps the 1-device rate, so the step
    time stays flat as users and devices grow together;
  - shared cores (what virtual CPU devices are): all devices share the one host's FLOP/s.
and prints both next to the measured times.

Projection (the assumptions, all flags):
  - model: Llama-2-7B (L 32, d 4096, MLP 11008, vocab 32000) in bf16; FLOPs per token from
    flops.flops_per_token (4 x body for the forward and the backward to activations, no
    weight gradients for the frozen base, LoRA and attention terms) at the task's mean sequence;
  - workload per user from the OPPU paper's Table 5 (its 100 most active test users: #History,
    L_in, L_out) and Table 4 (epochs): tokens = #History x (L_in + L_out + 16 prompt-template
    tokens) x epochs; evaluation = the task's queries per user, one scoring pass (2 x body per
    token); task adaptation once: Table 5's base-LLM queries x 2 epochs, data-parallel on all
    chips. PAG profiles and retrieval are not counted. Real users have shorter histories than the
    paper's most active ones, so per-user figures are upper ends;
  - hardware: peak bf16 dense 197 TFLOP/s per v5e chip, 989 per H100 (SXM); MFU --mfu (default
    0.35: LoRA steps of a 7B model with batches of a few hundred tokens per user, a guess between
    published full-training MFUs of 40-55 % and the small per-user batches); users train in
    waves of one user per users-axis position (more slots per position would fill a chip better
    for short histories), every user as long as the paper's average, no stragglers;
  - the model axis: v5e (16 GiB HBM) holds a 13.5 GB bf16 7B only split 4 ways (with activations
    and adapters), so 64 users train side by side on a v5e-256; an H100 (80 GB) holds it whole.

From compilations (`--compiled=FILE`, the JSON `python -m oppu_jax.compile_check --json=FILE`
wrote): per topology, the planner's mesh, users per step U and remat, and the compiled multi-user
step's FLOPs and bytes per device, turned into predicted users per hour for the task's workload
at --mfu. This replaces the projection's own FLOP model and its assumed model axis by what XLA
compiled for that chip.

  .venv/bin/python benchmarks/scale.py            # ~4 min on the 2-core dev box, quiet
  .venv/bin/python benchmarks/scale.py --task=LaMP_5 --mfu=0.25
  .venv/bin/python benchmarks/scale.py --projection_only
  .venv/bin/python benchmarks/scale.py \
      --compiled=docs/results/compile_llama2_7b/compile_check.json --task=LaMP_3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))

# OPPU paper, Table 5 (base-LLM training #Q, L_in, L_out; personal PEFT #Q, #History, L_in, L_out)
# and Table 4 (per-user epochs).
LAMP = {
    "LaMP_1": dict(base_q=7919, base_in=51.3, base_out=1.0, q=123, history=317.5, l_in=52.0,
                   l_out=1.0, epochs=3),
    "LaMP_2M": dict(base_q=3181, base_in=92.1, base_out=1.4, q=3302, history=55.6, l_in=92.6,
                    l_out=2.0, epochs=3),
    "LaMP_2N": dict(base_q=3662, base_in=68.2, base_out=1.3, q=6033, history=219.9, l_in=63.5,
                    l_out=1.1, epochs=3),
    "LaMP_3": dict(base_q=22388, base_in=128.7, base_out=1.0, q=112, history=959.8, l_in=211.9,
                   l_out=1.0, epochs=3),
    "LaMP_4": dict(base_q=7275, base_in=33.9, base_out=9.2, q=6275, history=270.1, l_in=25.2,
                   l_out=11.1, epochs=2),
    "LaMP_5": dict(base_q=16075, base_in=162.1, base_out=9.7, q=107, history=442.9, l_in=171.6,
                   l_out=10.3, epochs=2),
    "LaMP_7": dict(base_q=14826, base_in=29.7, base_out=18.3, q=109, history=121.2, l_in=29.4,
                   l_out=18.0, epochs=2),
}
PAPER_TEST_USERS = 100  # Table 5's #Q is over the 100 test users
TEMPLATE_TOKENS = 16
LLAMA2_7B = types.SimpleNamespace(num_layers=32, hidden_size=4096, num_heads=32,
                                  num_kv_heads=32, dim_per_head=128, intermediate_size=11008,
                                  vocab_size=32000, params=6.74e9, bytes_bf16=13.5e9)
HARDWARE = {  # name: (chips, peak bf16 FLOP/s per chip, model axis for a bf16 7B)
    "TPU v5e-256": (256, 197e12, 4),
    "64 x H100": (64, 989e12, 1),
}
USERS = (100, 10_000, 1_000_000)
SEQ_LEN, BATCH, STEPS_PER_USER = 128, 4, 6


def main():
  args = parse_args()
  if args.child:
    return child(args.child)
  if args.compiled:
    return print_compiled(args)
  mfu_cpu = None
  if not args.projection_only:
    rows = [measure(d) for d in args.devices]
    mfu_cpu = print_measured(rows)
  print_projection(args, mfu_cpu)


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
  p.add_argument("--task", default="LaMP_3", choices=sorted(LAMP))
  p.add_argument("--mfu", type=float, default=0.35)
  p.add_argument("--projection_only", action="store_true")
  p.add_argument("--compiled", default="", help="compile_check's JSON: predict from it")
  p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
  return p.parse_args()


# -- measured ----------------------------------------------------------------------------------


def measure(devices: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, __file__, f"--child={devices}"], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def child(devices: int) -> None:
  """One user per device, STEPS_PER_USER steps each; the steps' wall times (compile excluded)."""
  sys.path.insert(0, HERE)
  import numpy as np

  import flops
  import train_workload as wl
  from oppu_jax.models.load import load_model
  from oppu_jax.peft.lora import Lora
  from oppu_jax.sharding import mesh as mesh_lib, multi_user

  peak = flops.measure_gemm_peaks(include_torch=False, threads=0)["jax f32"]
  model, _ = load_model(compute_dtype="float32")
  plans = wl.make_plans(types.SimpleNamespace(users=devices, examples_per_user=BATCH *
                                              STEPS_PER_USER, seq_len=SEQ_LEN, batch_size=BATCH,
                                              epochs=1))
  peft = Lora(targets=wl.TARGETS, rank=wl.RANK, alpha=wl.ALPHA, dropout=wl.DROPOUT)
  config = multi_user.TrainConfig(learning_rate=wl.LR, slots=devices, users_per_pass=devices)
  mesh = mesh_lib.make_mesh(users=devices, model=1) if devices > 1 else None
  stamps = []
  multi_user.train_users(model, peft, plans, config, mesh=mesh,
                         progress=lambda _: stamps.append(time.perf_counter()))
  steps = np.diff(stamps)  # the first step (compilation) has no predecessor: left out
  step_flops = flops.model_flops(model.config, plans) / STEPS_PER_USER  # per step, all users
  tokens = flops.data_counts(plans)["real"] / STEPS_PER_USER
  print(json.dumps({"devices": devices, "users": devices, "step_s": float(np.median(steps)),
                    "steps_timed": len(steps), "flops": step_flops, "tokens": tokens,
                    "peak": peak}))


def print_measured(rows: list[dict]) -> float:
  """The measured table with both predictions; returns the 1-device MFU."""
  one = next(r for r in rows if r["devices"] == 1)
  rate = one["flops"] / one["step_s"]
  mfu = rate / one["peak"]
  print(f"\nMeasured (SmolLM2-135M, LoRA r8 q,v, batch {BATCH} x {SEQ_LEN}, one user per "
        f"device, median of {one['steps_timed']} steps, compile excluded)\n"
        f"1-device calibration: {rate / 1e9:.1f} GFLOP/s of model FLOPs = MFU {mfu:.3f} of the "
        f"{one['peak'] / 1e9:.0f} GFLOP/s f32 GEMM rate\n")
  print("| devices | users / step | tokens / step | s / step | model GFLOP/s | predicted s/step "
        "(independent chips) | error | predicted s/step (shared cores) | error |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    indep = r["flops"] / (r["devices"] * rate)
    shared = r["flops"] / rate
    print(f"| {r['devices']} | {r['users']} | {r['tokens']:.0f} | {r['step_s']:.3f} | "
          f"{r['flops'] / r['step_s'] / 1e9:.1f} | {indep:.3f} | {_err(indep, r['step_s'])} | "
          f"{shared:.3f} | {_err(shared, r['step_s'])} |")
  return mfu


def _err(predicted: float, measured: float) -> str:
  return f"{100 * (predicted - measured) / measured:+.0f} %"


# -- projection --------------------------------------------------------------------------------


def print_projection(args, mfu_cpu: float | None) -> None:
  sys.path.insert(0, HERE)
  import flops

  t = LAMP[args.task]
  m = LLAMA2_7B
  seq = t["l_in"] + t["l_out"] + TEMPLATE_TOKENS
  per_user_train = t["history"] * seq * t["epochs"] * flops.flops_per_token(m, int(seq))
  queries_per_user = t["q"] / PAPER_TEST_USERS
  per_user_eval = queries_per_user * seq * flops.flops_per_token(m, int(seq)) / 2  # forward only
  base_seq = t["base_in"] + t["base_out"] + TEMPLATE_TOKENS
  task_adapt = t["base_q"] * base_seq * 2 * flops.flops_per_token(m, int(base_seq))
  print(f"\nProjection: {args.task} on Llama-2-7B (bf16), MFU {args.mfu:.2f}"
        + (f" (this CPU's measured MFU: {mfu_cpu:.2f})" if mfu_cpu is not None else ""))
  print(f"per user: {t['history']:.0f} history items x {seq:.0f} tokens x {t['epochs']} epochs "
        f"= {t['history'] * seq * t['epochs'] / 1e3:.0f}k training tokens, "
        f"{per_user_train / 1e15:.2f} PFLOP; {queries_per_user:.2f} queries "
        f"({per_user_eval / 1e12:.1f} TFLOP); task adaptation once: {task_adapt / 1e15:.1f} PFLOP\n")
  print("| users | hardware | chips | users side by side (users axis) | task adaptation | per-user stage | "
        "evaluation | wall time | chip-hours |")
  print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
  for users in USERS:
    for name, (chips, peak, model_axis) in HARDWARE.items():
      rate = chips * peak * args.mfu
      stage1 = task_adapt / rate
      # Users train in waves, one per position of the users axis (a model-axis group of chips).
      positions = chips // model_axis
      stage2 = math.ceil(users / positions) * per_user_train / (model_axis * peak * args.mfu)
      stage3 = users * per_user_eval / rate
      total = stage1 + stage2 + stage3
      print(f"| {users:,} | {name} | {chips} | {positions} | {_dur(stage1)} | "
            f"{_dur(stage2)} | {_dur(stage3)} | {_dur(total)} | {total * chips / 3600:,.0f} |")


# P2P (arXiv 2510.16282) reports 20.44 s per user for an OPPU LoRA on a 7B model.
P2P_SECONDS_PER_USER = 20.44


def print_compiled(args) -> None:
  """Users per hour per topology from the compiled multi-user step (compile_check's plan)."""
  with open(args.compiled) as f:
    checks = json.load(f)
  t = LAMP[args.task]
  print(f"\nPredicted from compilations ({args.compiled}): {args.task}'s most active users "
        f"(OPPU Table 5: {t['history']:.0f} history items, {t['epochs']} epochs), MFU {args.mfu}")
  print("| topology | chips | model | mesh (users x model) | U | remat | GiB / device | "
        "TFLOP / step | s / step | steps / user | users / hour | chip-s / user | "
        f"x P2P's {P2P_SECONDS_PER_USER} s |")
  print("|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
  for c in checks:
    step = next(p for p in c["programs"] if p["program"].startswith("users_step[lora]"))
    steps_per_user = math.ceil(t["history"] / step["rows"]) * t["epochs"]
    seconds = step["flops"] / c["devices"] / (c["peak_flops"] * args.mfu)
    per_hour = 3600 * c["slots"] / (steps_per_user * seconds)
    chip_seconds = c["devices"] * 3600 / per_hour
    print(f"| {c['target']} | {c['devices']} | {c['model']} | {c['mesh'][0]} x {c['mesh'][1]} | "
          f"{c['slots']} | {'yes' if c['remat'] else 'no'} | "
          f"{step['bytes_per_device'] / 2**30:.1f} | {step['flops'] / 1e12:.0f} | "
          f"{seconds:.3f} | {steps_per_user} | {per_hour:,.0f} | {chip_seconds:.0f} | "
          f"{chip_seconds / P2P_SECONDS_PER_USER:.1f} |")


def _dur(seconds: float) -> str:
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.0f} min"
  if seconds < 3 * 86400:
    return f"{seconds / 3600:.1f} h"
  return f"{seconds / 86400:.1f} d"


if __name__ == "__main__":
  main()
