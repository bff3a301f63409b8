"""pipeline_bench.py --profile: where each stage's time goes, from the run's own records.

The run writes timings.json (per stage: wall time, compilations and their seconds, real and
computed tokens, idle slot-steps) and, with config.trace.dir, a jax.profiler trace of a few steps
of each stage. XLA:CPU emits one trace event per thunk (a fused kernel, a GEMM) with its HLO
instruction's name; the HLO dump (XLA_FLAGS=--xla_dump_to, set by pipeline_bench) gives each
instruction's op_name, whose named scopes ("vocab_head", "dropout", "lora", "optimizer") and
stack frames say what the kernel is for. So, per stage:

  whole stage (timings.json): wall, compilations and their seconds, padding, idle slots;
  per traced step (or batch): its wall on the Python thread = device (the time any XLA thread
  runs a kernel) + host (the rest: batch building, uploads, dispatch, the Python loop), and the
  device time split by purpose (each purpose's share of the kernel time summed over threads:
  XLA:CPU runs independent kernels on its 2 threads at once).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

# What an instruction is for, from its op_name and stack frames (first match wins).
_PURPOSES = (
    ("vocab_head", "LM head + log-softmax over the vocabulary"),
    ("log_softmax", "LM head + log-softmax over the vocabulary"),
    ("logsumexp", "LM head + log-softmax over the vocabulary"),
    ("/dropout/", "LoRA dropout (random bits, masks)"),
    ("clipping.py", "gradient clipping"),
    ("/optimizer/", "AdamW update"),
    ("/lora/", "LoRA matmuls (f32 adapters)"),
    ("attention", "attention (scores, softmax, mask)"),
    ("rms_norm", "RMSNorm"),
    ("rope", "rotary embeddings"),
    ("dynamic_update_slice", "layer scan: slicing and stacking"),
    ("dynamic_slice", "layer scan: slicing and stacking"),
)
# Thunks that only run others (their time is their children's): not counted twice.
_CONTAINERS = ("while", "conditional", "call", "async")


def hlo_labels(dump_dir: str) -> dict[str, list[tuple[float, dict[str, str]]]]:
  """{module name: [(when it was compiled, {instruction name: "op_name @ file:function < ..."}),
  one per compiled module of that name]} from an XLA HLO dump (a function compiled for several
  shapes dumps several modules of one name; `_pick` finds the one a trace ran)."""
  labels = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(dump_dir, "*cpu_after_optimizations.txt"))):
    with open(path) as f:
      text = f.read()
    module = re.match(r"HloModule (\S+?),", text).group(1)
    tables, one = _tables(text), {}
    for name, meta in re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{([^}]*)\}", text,
                                 re.M):
      op = re.search(r'op_name="([^"]*)"', meta)
      frame = re.search(r"stack_frame_id=(\d+)", meta)
      one[name] = (op.group(1) if op else "") + " @ " + _frames(
          tables, int(frame.group(1)) if frame else 0)
    labels[module].append((os.path.getmtime(path), one))
  return labels


def _pick(candidates, ops: set[str], window: tuple[float, float]) -> dict[str, str]:
  """The module (of several of one name) a trace ran: of those compiled during its stage
  (`window`, epoch seconds), else of all, the one holding the most of the instructions it ran
  (instruction names such as fusion.12 recur between modules: the stage narrows it down)."""
  during = [one for when, one in candidates if window[0] <= when <= window[1]]
  pool = during or [one for _, one in candidates]
  return max(pool, key=lambda one: len(ops & one.keys()), default={})


def _tables(text: str) -> dict[str, dict[int, str]]:
  out = {}
  for table in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
    block = re.search(rf"^{table}\n(.*?)\n\n", text, re.M | re.S)
    rows = re.findall(r"^(\d+) (.*)$", block.group(1), re.M) if block else []
    out[table] = {int(i): v for i, v in rows}
  return out


def _frames(tables, frame: int) -> str:
  parts, seen = [], set()
  while frame and frame not in seen:
    seen.add(frame)
    row = tables["StackFrames"].get(frame, "")
    loc = tables["FileLocations"].get(int(_field(row, "file_location_id") or 0), "")
    file = tables["FileNames"].get(int(_field(loc, "file_name_id") or 0), "").strip('"')
    func = tables["FunctionNames"].get(int(_field(loc, "function_name_id") or 0), "").strip('"')
    parts.append(f"{os.path.basename(file)}:{func}")
    frame = int(_field(row, "parent_frame_id") or 0)
  return " < ".join(parts)


def _field(row: str, key: str) -> str | None:
  m = re.search(rf"{key}=(\d+)", row)
  return m.group(1) if m else None


def purpose(label: str, thunk: str) -> str:
  for key, what in _PURPOSES:
    if key in label:
      return what
  if "ynn_fusion" in thunk or "dot" in thunk:
    return "GEMMs: projections, MLP (bf16)"
  if "convert" in thunk:
    return "dtype converts"
  if "transpose" in thunk or "copy" in thunk:
    return "transposes and copies"
  return "other element-wise kernels"


def trace_events(trace_dir: str) -> list[dict]:
  paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  if not paths:
    return []
  with gzip.open(sorted(paths)[-1]) as f:
    events = json.load(f)
  return events["traceEvents"] if isinstance(events, dict) else events


def stage_breakdown(trace_dir: str, labels, ticks: int,
                    window: tuple[float, float] = (0.0, 0.0)) -> dict | None:
  """Per traced update: "wall" (the Python thread's span), "device" (the time any XLA thread
  runs a kernel: the union of their intervals), "host" (the rest: batches, uploads, dispatch,
  Python), and "purposes" ({purpose: seconds}, the device time split by each purpose's share of
  the kernel time summed over threads: two threads may run kernels at once)."""
  events = trace_events(trace_dir)
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  kernels, python, ran = [], [], collections.defaultdict(set)
  for e in events:
    if e.get("ph") != "X":
      continue
    args = e.get("args", {})
    if not threads.get((e.get("pid"), e.get("tid")), "").startswith("tf_"):
      python.append((e["ts"], e["ts"] + e["dur"]))
    elif "hlo_op" in args and args["hlo_op"].split(".")[0] not in _CONTAINERS:
      kernels.append((e["ts"], e["ts"] + e["dur"], args.get("hlo_module", ""), args["hlo_op"],
                      e["name"]))
      ran[args.get("hlo_module", "")].add(args["hlo_op"])
  chosen = {m: _pick(labels.get(m, []), ops, window) for m, ops in ran.items()}
  by_purpose = collections.Counter()
  for a, b, module, op, thunk in kernels:
    by_purpose[purpose(chosen[module].get(op, ""), thunk)] += b - a
  if not python or not kernels:
    return None
  n = max(ticks, 1)
  wall = (max(b for _, b in python) - min(a for a, _ in python)) / 1e6 / n
  device = _union([(a, b) for a, b, *_ in kernels]) / 1e6 / n
  total = sum(by_purpose.values())
  return {"wall": wall, "device": device, "host": max(wall - device, 0.0),
          "purposes": {k: device * v / total for k, v in by_purpose.items()}}


def _union(intervals) -> float:
  """Total length covered by [start, end) intervals."""
  covered, end = 0.0, float("-inf")
  for a, b in sorted(intervals):
    if b > end:
      covered += b - max(a, end)
      end = b
  return covered


def breakdown_table(workdir: str, trace_dir: str, dump_dir: str) -> str:
  """The per-stage tables pipeline_bench --profile prints."""
  with open(os.path.join(workdir, "timings.json")) as f:
    timings = json.load(f)
  labels = hlo_labels(dump_dir)
  lines = []
  for stage in timings["stages"]:
    head = (f"{stage['stage']}: {stage['seconds']:.1f} s wall, {stage['compilations']} "
            f"compilations ({stage['compile_seconds']:.1f} s)")
    if "compiled_steps" in stage:
      head += (f", {stage['compiled_steps']} compiled steps, padding "
               f"{stage['padding_share']:.0%} of computed tokens, "
               f"{stage['idle_slot_steps']} idle slot-steps")
    lines.append(head)
    slug = re.sub(r"[^a-z0-9]+", "_", stage["stage"].lower()).strip("_")
    if "traced" not in stage:
      lines.append("  (no trace window: the stage had too few updates)")
      continue
    start = stage.get("started_at", 0.0)
    b = stage_breakdown(os.path.join(trace_dir, slug), labels, stage["traced"]["ticks"],
                        (start, start + stage["seconds"]))
    what = "step" if "compiled_steps" in stage else "batch"
    if b is None:
      lines.append(f"  (the trace window holds no kernels: {stage['traced']})")
      continue
    lines.append(f"  per traced {what} ({stage['traced']['ticks']} traced): wall "
                 f"{b['wall']:.3f} s = device {b['device']:.3f} s + host {b['host']:.3f} s")
    for name, sec in sorted(b["purposes"].items(), key=lambda kv: -kv[1]):
      lines.append(f"    {sec:8.3f} s {sec / max(b['wall'], 1e-9):6.1%}  {name}")
    lines.append(f"    {b['host']:8.3f} s {b['host'] / max(b['wall'], 1e-9):6.1%}  no kernel running "
                 "(Python, batches, uploads, dispatch, gaps between kernels)")
  return "\n".join(lines)
