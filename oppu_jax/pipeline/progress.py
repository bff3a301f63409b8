"""Progress of a stage: a bar over steps (or queries) with tokens/s and an ETA on a terminal, one
log line per ~10 % elsewhere (a log file, CI). Under `recording()`, each finished bar also leaves
a summary of its stage (wall time, real and computed tokens, idle slots, compilations): the run
writes them to timings.json, so where a run's time went is in its workdir; with a trace window
(config.trace), a jax.profiler trace of a few steps of each stage as well."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time

import jax
from tqdm import tqdm

_compiles = {"count": 0, "seconds": 0.0}  # XLA compilations of this process so far
_stages: list[dict] | None = None  # the summaries of the recording run's finished bars
_trace: dict = {}  # the recording run's trace window: dir, skip, steps ({}: none)


def _on_duration(event: str, seconds: float, **_) -> None:
  if event == "/jax/core/compile/backend_compile_duration":
    _compiles["count"] += 1
    _compiles["seconds"] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_duration)


class Bar:
  """done / total. Call it with the trainer's StepReport (steps_done, total_steps, tokens,
  users_done, users_total) after every step, or `update(n)` for other work."""

  def __init__(self, tqdm_bar: tqdm, desc: str, total: int, unit: str, enabled: bool):
    self.tqdm, self.desc, self.total, self.unit, self.enabled = tqdm_bar, desc, total, unit, enabled
    self.done, self.tokens, self.tenths, self.users = 0, 0, 0, ""
    self.computed, self.calls, self.idle_slot_steps = 0, 0, 0
    self.start, self.started_at = time.perf_counter(), time.time()
    self.compiles_before = dict(_compiles)
    self.ticks, self.tracing = 0, False  # updates so far; whether this bar's trace runs
    self.traced = None  # the trace window once it stopped: {ticks, seconds}

  def __call__(self, report) -> None:
    self.tokens += report.tokens
    self.computed += report.computed
    self.idle_slot_steps += report.idle_slots
    self.calls += 1
    self.users = f"users {report.users_done}/{report.users_total}"
    self.tqdm.total = self.total = report.total_steps
    self.update(report.steps_done - self.done)

  def advance(self, done: int, total: int) -> None:
    """For work whose total is known only once it starts (profiles to generate)."""
    self.tqdm.total = self.total = total
    self.update(done - self.done)

  def update(self, n: int = 1) -> None:
    self.done += n
    self._trace_window()
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    postfix = ", ".join(p for p in (self.tokens and f"{self.tokens / elapsed:,.0f} tok/s",
                                    self.users) if p)
    if not self.tqdm.disable:
      self.tqdm.set_postfix_str(postfix, refresh=False)
      self.tqdm.update(n)
    elif self.enabled and 10 * self.done // max(self.total, 1) > self.tenths:
      self.tenths = 10 * self.done // max(self.total, 1)
      m, s = divmod(int(elapsed * (self.total - self.done) / self.done), 60)
      logging.info("%s: %d/%d %s (%d %%), %s, ETA %dm%02ds", self.desc, self.done, self.total,
                   self.unit, 100 * self.done // max(self.total, 1), postfix or "-", m, s)

  def _trace_window(self) -> None:
    """Starts the stage's trace after `skip` updates (steps, batches) and stops it `steps` later."""
    self.ticks += 1
    if not _trace:
      return
    if self.ticks == _trace["skip"]:
      slug = re.sub(r"[^a-z0-9]+", "_", self.desc.lower()).strip("_")
      jax.profiler.start_trace(os.path.join(_trace["dir"], slug), create_perfetto_trace=True)
      self.tracing = True
      self.trace_start = time.perf_counter()
    elif self.tracing and self.ticks == _trace["skip"] + _trace["steps"]:
      self.stop_trace()

  def stop_trace(self) -> None:
    if self.tracing:
      jax.profiler.stop_trace()
      self.tracing = False
      self.traced = {"ticks": self.ticks - _trace["skip"],
                     "seconds": round(time.perf_counter() - self.trace_start, 3)}

  def summary(self) -> dict:
    seconds = time.perf_counter() - self.start
    out = {"stage": self.desc, "started_at": round(self.started_at, 3),  # (epoch seconds)
           "seconds": round(seconds, 2), self.unit: self.done,
           "compilations": _compiles["count"] - self.compiles_before["count"],
           "compile_seconds": round(_compiles["seconds"] - self.compiles_before["seconds"], 2)}
    if self.traced:  # the trace window: how many updates, how long
      out["traced"] = self.traced
    if self.calls:  # a training stage: what its compiled steps computed
      out.update(compiled_steps=self.calls, real_tokens=self.tokens,
                 real_tokens_per_s=round(self.tokens / max(seconds, 1e-9), 1),
                 padding_share=round(1 - self.tokens / max(self.computed, 1), 3),
                 idle_slot_steps=self.idle_slot_steps)
    return out


@contextlib.contextmanager
def bar(desc: str, total: int, unit: str, enabled: bool = True):
  # The annotation names the stage in a jax.profiler trace (free when none is taken).
  with tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True,
            mininterval=1.0, disable=not (enabled and sys.stderr.isatty())) as t, \
      jax.profiler.TraceAnnotation(desc):
    b = Bar(t, desc, total, unit, enabled)
    try:
      yield b
    finally:
      b.stop_trace()
  if _stages is not None:
    _stages.append(b.summary())


@contextlib.contextmanager
def recording(trace_dir: str = "", skip: int = 1, steps: int = 3):
  """Yields the list that every bar finished inside appends its stage summary to; with a
  trace_dir, each bar traces its updates skip+1 .. skip+steps into trace_dir/<stage>/."""
  global _stages, _trace
  outer = _stages, _trace
  _stages = []
  _trace = {"dir": trace_dir, "skip": max(skip, 1), "steps": max(steps, 1)} if trace_dir else {}
  try:
    yield _stages
  finally:
    _stages, _trace = outer

