"""One training step of the default per-user stage, timed under whatever jax is importable: how
jax/jaxlib versions move the step (benchmarks/jax_versions.sh runs it under each version).

  .venv/bin/python benchmarks/step_bench.py            # 8 users looped, batch 4 x 128, bf16
  PYTHONPATH=/tmp/jv/0.8.3 .venv/bin/python benchmarks/step_bench.py

The step is the pipeline's: 8 slots (users looped inside one compiled step on a CPU), LoRA r=8 on
q,v with dropout, AdamW with clipping, bf16 frozen weights and compute, train_bench's synthetic
batches. Prints one line: versions, compile seconds, the median and min step seconds over the
steps after the first (compilation), real tokens/s at the median, and the first and last mean
loss (the numerics: equal across versions up to bf16 rounding).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--users", type=int, default=8)
  p.add_argument("--examples_per_user", type=int, default=8)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--epochs", type=int, default=3)
  args = p.parse_args()

  import flax
  import jax
  import jaxlib
  import numpy as np

  from oppu_jax.models.load import load_model
  from oppu_jax.peft.lora import Lora
  from oppu_jax.train import multi_user
  from train_workload import ALPHA, CLIP, DROPOUT, RANK, SEED, TARGETS, WARMUP, WEIGHT_DECAY
  from train_workload import make_plans

  plans = make_plans(args)
  model, _ = load_model(param_dtype="bfloat16", compute_dtype="bfloat16")
  peft = Lora(targets=TARGETS, rank=RANK, alpha=ALPHA, dropout=DROPOUT)
  config = multi_user.TrainConfig(learning_rate=3e-3, weight_decay=WEIGHT_DECAY, clip_norm=CLIP,
                                  warmup_ratio=WARMUP, slots=args.users, seed=SEED)
  stamps, tokens = [time.perf_counter()], []

  def progress(report):
    stamps.append(time.perf_counter())
    tokens.append(report.tokens)

  results = multi_user.train_users(model, peft, plans, config, progress=progress)
  steps = np.diff(stamps)
  later = steps[1:]
  median = statistics.median(later)
  tok = statistics.median(tokens[1:])
  losses = np.array([r.losses for r in results.values()])
  print(f"jax {jax.__version__} jaxlib {jaxlib.__version__} flax {flax.__version__} | "
        f"first step (compile) {steps[0]:.1f} s | step median {median:.3f} s min {later.min():.3f} s"
        f" over {len(later)} | {tok / median:.1f} real tok/s | loss {losses[:, 0].mean():.4f} > "
        f"{losses[:, -1].mean():.4f}", flush=True)


if __name__ == "__main__":
  main()
