"""train_bench.py --profile: where a step's time goes, from XLA:CPU's per-thunk trace events."""

from __future__ import annotations

import collections
import gc
import glob
import gzip
import json
import os
import tempfile

import jax

from oppu_jax.models.load import load_model
from oppu_jax.peft.lora import Lora
from oppu_jax.train import multi_user
from train_workload import ALPHA, CLIP, DROPOUT, LR, RANK, SEED, TARGETS, WARMUP, WEIGHT_DECAY


# Thunk name -> what it is, by XLA:CPU's naming (first match wins).
_THUNK_KINDS = (
    ("ynn_fusion", "GEMMs (YNNPACK dot fusions)"),
    ("dot", "GEMMs (other dots)"),
    ("convert", "dtype converts"),
    ("broadcast", "buffer fills (scan output stacks)"),
    ("dynamic-update-slice", "scan stacking (dynamic-update-slice)"),
    ("transpose", "transposes/copies"),
    ("copy", "transposes/copies"),
)

def profile_steps(plans, args):
  """Traces our trainer on the first user alone (slots=1), for f32 and for bf16."""
  for dtype, params in (("float32", "float32"), ("bfloat16", args.bf16_params)):
    model, _ = load_model(param_dtype=params, compute_dtype=dtype)
    peft = Lora(targets=TARGETS, rank=RANK, alpha=ALPHA, dropout=DROPOUT)
    config = multi_user.TrainConfig(learning_rate=LR, weight_decay=WEIGHT_DECAY, clip_norm=CLIP,
                                    warmup_ratio=WARMUP, slots=1, seed=SEED)
    with tempfile.TemporaryDirectory() as trace_dir:
      # Compilation emits no thunk events, so tracing the whole call times execution only.
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        multi_user.train_users(model, peft, plans[:1], config)
      path = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
      with gzip.open(path[0]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    by_kind, by_name = collections.Counter(), collections.Counter()
    for e in events:
      if e.get("ph") == "X" and "hlo_module" in e.get("args", {}):
        kind = next((k for key, k in _THUNK_KINDS if key in e["name"]), "other fusions")
        by_kind[kind] += e["dur"] / 1e6
        by_name[e["name"]] += e["dur"] / 1e6
    total = sum(by_kind.values())
    steps = plans[0].total_steps
    print(f"profile, compute {dtype} (params {params}): {total / steps:.2f} s of thunk time per "
          f"step over {steps} steps (thunks may overlap on 2 threads)")
    for kind, sec in by_kind.most_common():
      print(f"  {sec / total:6.1%} {kind}")
    print("  top thunks: " + ", ".join(f"{n} {s / steps:.3f}s" for n, s in by_name.most_common(6)))
    del model
    gc.collect()
  print(flush=True)
