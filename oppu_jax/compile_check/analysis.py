"""What a compiled program costs on its target: bytes per device, FLOPs per step, collectives.

- Bytes: XLA's memory analysis of the executable, per device (arguments, outputs, temporaries,
  code; outputs that alias donated arguments counted once).
- FLOPs: counted on the program's jaxpr (every dot_general, a scan body times its length, a
  while loop's body times its trip bound), the whole mesh's work per step. XLA's cost analysis is
  not used for it: it counts a loop body once (a 32-layer scan as one layer), and the CUDA
  plugin has none.
- Collectives: the communication ops in the compiled HLO (async -start forms included), each
  with the bytes of its result; an op inside the layer scan runs once per layer.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import time

import jax
import numpy as np
from jax.extend import core as jex_core

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "f8e4m3fn": 1, "f8e5m2": 1}


@dataclasses.dataclass
class Cost:
  arguments: int
  outputs: int
  temps: int
  code: int
  flops: float  # the whole mesh's, per step
  collectives: dict  # kind -> (ops in the HLO, bytes of their results)
  compile_seconds: float
  # The compiler's refusal, when the program cannot fit at all (XLA:TPU stops compiling once
  # its temporaries exceed the chip's HBM): then `temps` is what it said they need and the
  # other sizes are unknown (0).
  refused: str = ""
  failed: str = ""  # the compiler's error, when it failed for another reason than memory

  @property
  def bytes_per_device(self) -> int:
    return self.arguments + self.outputs + self.temps + self.code

  def fits(self, hbm_bytes: int) -> bool:
    return not (self.refused or self.failed) and self.bytes_per_device <= hbm_bytes


def analyse(traced, loop_trips: int) -> Cost:
  """Lowers and compiles `traced` (a jax.stages.Traced) and measures it."""
  flops = count_flops(traced.jaxpr.jaxpr, loop_trips)
  start = time.perf_counter()
  try:
    compiled = traced.lower().compile()
  except jax.errors.JaxRuntimeError as e:
    seconds = time.perf_counter() - start
    need = _REFUSED.search(str(e))
    if "RESOURCE_EXHAUSTED" in str(e) and need is not None:
      return Cost(0, 0, int(float(need.group(1)) * _UNITS[need.group(2)]), 0, flops, {},
                  seconds, refused=str(e).splitlines()[0][:300])
    # Any other compiler failure is a finding too (and must not end a long check): kept.
    return Cost(0, 0, 0, 0, flops, {}, seconds, failed=" ".join(str(e).split())[:300])
  seconds = time.perf_counter() - start
  m = compiled.memory_analysis()
  return Cost(
      arguments=int(m.argument_size_in_bytes),
      outputs=int(m.output_size_in_bytes - m.alias_size_in_bytes),
      temps=int(m.temp_size_in_bytes), code=int(m.generated_code_size_in_bytes),
      flops=flops, collectives=collectives(compiled.as_text()), compile_seconds=seconds)


def count_flops(jaxpr, loop_trips: int = 0) -> float:
  """2 x multiply-adds of every dot_general in `jaxpr`, through every sub-jaxpr: a scan's body
  times its length, a while loop's body `loop_trips` times, a cond's costliest branch."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * count_flops(eqn.params["jaxpr"].jaxpr, loop_trips)
    elif name == "while":
      total += loop_trips * count_flops(eqn.params["body_jaxpr"].jaxpr, loop_trips)
    elif name == "cond":
      total += max(count_flops(b.jaxpr, loop_trips) for b in eqn.params["branches"])
    else:
      for sub in _subjaxprs(eqn.params):
        total += count_flops(sub, loop_trips)
  return total


def _dot_flops(eqn) -> float:
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  (contract, _), (batch, _) = eqn.params["dimension_numbers"]
  out = math.prod(eqn.outvars[0].aval.shape)
  return 2.0 * out * math.prod(lhs[d] for d in contract)


def _subjaxprs(params):
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, jex_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jex_core.Jaxpr):
        yield v


_REFUSED = re.compile(r"temporaries \(([\d.]+)([KMGT])\)")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_OP = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(KINDS) + r")(-start)?\(")
_ARRAY = re.compile(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]")


def collectives(hlo: str) -> dict[str, tuple[int, int]]:
  """kind -> (ops, bytes of their results) in an HLO module's text. An async `-start` op's
  result is a tuple holding its operands too: its last array is counted."""
  found = collections.defaultdict(lambda: [0, 0])
  for line in hlo.splitlines():
    m = _OP.search(line)
    if not m:
      continue
    arrays = [(d, s) for d, s in _ARRAY.findall(m.group(1)) if d in _DTYPE_BYTES]
    if m.group(3) and arrays:
      arrays = arrays[-1:]
    nbytes = sum(_DTYPE_BYTES[d] * int(np.prod([int(x) for x in s.split(",") if x] or [1]))
                 for d, s in arrays)
    found[m.group(2)][0] += 1
    found[m.group(2)][1] += nbytes
  return {k: tuple(v) for k, v in found.items()}


def collectives_text(found: dict) -> str:
  if not found:
    return "none"
  return ", ".join(f"{k} x{n} ({size_text(b)})" for k, (n, b) in sorted(found.items()))


def size_text(nbytes: float) -> str:
  for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if nbytes >= scale:
      return f"{nbytes / scale:.1f} {unit}"
  return f"{int(nbytes)} B"
