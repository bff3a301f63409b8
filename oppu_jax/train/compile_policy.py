"""How the train step is compiled: with activation recomputation (remat) only when XLA's memory
plan for the step exceeds the budget, and the budget read from the device or the OS."""

from __future__ import annotations

import logging
from typing import Any, Callable

import jax


def compile_step(jits: dict[bool, Any], args: tuple, *, remat: str, model_remat: bool,
                 budget_gb: float, label: Any) -> tuple[Callable, bool, int]:
  """Compiles `jits[remat]` (jax.jit functions) for `args`; returns (executable, remat used,
  compilations done). remat: "auto" | "always" | "never"; model_remat: the model config forces it.
  """
  use_remat = remat == "always" or model_remat
  compiled, compilations = jits[use_remat].lower(*args).compile(), 1
  need, budget = planned_bytes(compiled), memory_budget(budget_gb)
  if not use_remat and remat == "auto" and need is not None and need > budget:
    logging.info("the step for batch shape %s plans %.1f GB > the %.1f GB budget: recomputing "
                 "activations in the backward pass (remat)", label, need / 1e9, budget / 1e9)
    use_remat, compiled = True, jits[True].lower(*args).compile()
    compilations += 1
    need = planned_bytes(compiled)
  if need is not None and need > budget:
    logging.warning("the step for batch shape %s plans %.1f GB, over the %.1f GB budget; lower "
                    "train.slots or train.batch_size if it runs out of memory", label,
                    need / 1e9, budget / 1e9)
  return compiled, use_remat, compilations


def planned_bytes(compiled) -> int | None:
  """Memory the step needs beyond its inputs: XLA's temporaries and its non-donated outputs."""
  try:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # not every backend reports it
    return None


def memory_budget(budget_gb: float = 0.0) -> int:
  """Bytes: `budget_gb` if > 0, else 90 % of what the device (or, on a CPU, the OS) can still
  give."""
  if budget_gb > 0:
    return int(budget_gb * 1e9)
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:  # accelerators
    return int(0.9 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
  try:  # CPU: what the operating system can still give
    with open("/proc/meminfo") as f:
      info = dict(line.split(":", 1) for line in f)
    return int(0.9 * int(info["MemAvailable"].split()[0]) * 1024)
  except (OSError, KeyError, ValueError):
    return 2**62
