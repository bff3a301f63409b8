"""train_bench.py's output: the data line, a method's result row and its progress line, and the
speed and peak-memory tables."""

from __future__ import annotations

import dataclasses
import math

from flops import data_counts
from train_workload import RANK, TARGETS

GIB = 1024**3

def describe_data(plans, args):
  c = data_counts(plans)
  print(f"data: {len(plans)} users x {args.examples_per_user} examples x {args.epochs} epoch(s), "
        f"batch {args.batch_size} x {args.seq_len} tokens (synthetic text, our tokenizer); "
        f"{c['real']} real tokens, {c['targets']} answer tokens, padding "
        f"{1 - c['real'] / c['padded']:.1%} of the {c['padded']} processed slots", flush=True)

@dataclasses.dataclass
class Row:
  method: str
  users_per_step: int
  dtype: str
  seconds: float  # training wall time, compilation excluded
  compile_seconds: float
  users: int
  tokens: int
  flops: float
  peak: float  # GEMM FLOP/s of this dtype path
  first_loss: float  # mean over users of their first / last step loss
  last_loss: float

  @property
  def tokens_per_s(self):
    return self.tokens / self.seconds

  @property
  def s_per_adapter(self):
    return self.seconds / self.users

  @property
  def mfu(self):
    return self.flops / self.seconds / self.peak

def progress_line(row: Row):
  print(f"  {row.method:<22} {row.dtype:<18} {row.tokens_per_s:7.1f} tokens/s "
        f"{row.s_per_adapter:6.2f} s/adapter"
        + ("" if math.isnan(row.compile_seconds) else f" (compile {row.compile_seconds:.1f} s)"),
        flush=True)

def print_table(rows: list[Row], plans, args):
  ref = {r.dtype: r for r in rows if r.method.startswith("(c)")}
  ref_f32, ref_bf16 = ref.get("f32"), ref.get("bf16 autocast")
  print()
  print(f"LoRA r={RANK} on {','.join(TARGETS)}, {len(plans)} users, seq {args.seq_len}, batch "
        f"{args.batch_size}; tokens/s = real tokens; MFU = minimum model FLOPs / GEMM peak of "
        "the row's dtype")
  header = (f"{'method':<22} {'users/step':>10} {'dtype':<18} {'tokens/s':>9} {'s/adapter':>9} "
            f"{'x c-f32':>8} {'x c-bf16':>8} {'MFU':>6} {'compile s':>9} {'loss first>last':>16}")
  print(header)
  print("-" * len(header))
  for r in rows:
    vs = lambda c: f"{c.s_per_adapter / r.s_per_adapter:8.2f}" if c else f"{'-':>8}"
    print(f"{r.method:<22} {r.users_per_step:>10} {r.dtype:<18} {r.tokens_per_s:9.1f} "
          f"{r.s_per_adapter:9.2f} {vs(ref_f32)} {vs(ref_bf16)} {r.mfu:6.1%} "
          f"{_or_dash(r.compile_seconds):>9} {r.first_loss:7.3f} > {r.last_loss:6.3f}")
  print("x c-*: s/adapter of that reference row / s/adapter of this row (higher is faster).")
  print("targets for (a): >= 2x c-f32, >= 1x c-bf16, MFU >= 50 %"
        + (" -- NOT VALID NOW: the CPU was shared (see the WARNING above)"
           if getattr(args, "load_at_start", 0) > 0.5 and args.threads != 1 else ""))
  for r in rows:
    if not r.method.startswith("(a)"):
      continue
    checks = [f"MFU {r.mfu:.0%} {'ok' if r.mfu >= 0.5 else 'MISSED'}"]
    if ref_f32:
      x = ref_f32.s_per_adapter / r.s_per_adapter
      checks.append(f"{x:.2f}x c-f32 {'ok' if x >= 2 else 'MISSED'}")
    if ref_bf16:
      x = ref_bf16.s_per_adapter / r.s_per_adapter
      checks.append(f"{x:.2f}x c-bf16 {'ok' if x >= 1 else 'MISSED'}")
    print(f"  {r.method} {r.dtype}: " + ", ".join(checks))
  print(flush=True)

def _or_dash(x: float) -> str:
  return "-" if math.isnan(x) else f"{x:.1f}"

def print_memory(results: list[dict], args):
  print()
  mode = "vmapped" if args.memory_vmapped else "the trainer's default (looped on a CPU)"
  print(f"Peak memory, f32, one training step of U users x {args.memory_batch_size} row(s) x "
        f"{args.seq_len} tokens (GiB), one fresh process per U; users {mode}.")
  print("expected growth = U x (adapter + AdamW) + activations (XLA's planned temporaries); "
        "growth = peak RSS in the step - RSS with the model loaded")
  header = (f"{'U':>3} {'remat':>5} {'base':>5} {'U x (ad+opt)':>12} {'act (XLA)':>9} "
            f"{'expected':>8} {'growth':>7} {'ratio':>5} {'loaded RSS':>10} {'peak RSS':>8} "
            f"{'step s':>6}")
  print(header)
  print("-" * len(header))
  for m in results:
    if "error" in m:
      print(f"{m['users']:>3} failed: {m['error']}")
      continue
    per_user = m["users"] * (m["adapter_bytes"] + m["optimizer_bytes"])
    expected = per_user + (m["xla_temp"] or 0)
    growth = m["peak_rss"] - m["loaded_rss"]
    print(f"{m['users']:>3} {str(m['remat']):>5} {m['base_bytes'] / GIB:5.2f} "
          f"{per_user / GIB:12.3f} {(m['xla_temp'] or 0) / GIB:9.2f} {expected / GIB:8.2f} "
          f"{growth / GIB:7.2f} {growth / expected:5.2f} {m['loaded_rss'] / GIB:10.2f} "
          f"{m['peak_rss'] / GIB:8.2f} {m['seconds']:6.1f}")
    if m.get("xla_temp_without_remat"):
      print(f"    (without remat XLA planned {m['xla_temp_without_remat'] / GIB:.1f} GiB of "
            f"temporaries, above --memory_limit_gb {args.memory_limit_gb}: the trainer chose "
            "remat)")
  ok = [m for m in results if "error" not in m]
  if len(ok) >= 2 and ok[0]["remat"] == ok[-1]["remat"]:
    a, b = ok[0], ok[-1]
    slope = (b["peak_rss"] - a["peak_rss"]) / (b["users"] - a["users"])
    print(f"Peak RSS grows {slope / GIB:.3f} GiB per extra user (a base copy would add "
          f"{a['base_bytes'] / GIB:.2f}); loaded RSS = runtime {a['runtime_rss'] / GIB:.2f} + "
          "base + what the GGUF loader leaves resident.", flush=True)
