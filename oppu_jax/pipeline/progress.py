"""Progress of a stage: a bar over steps (or queries) with tokens/s and an ETA on a terminal, one
log line per ~10 % elsewhere (a log file, CI)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from tqdm import tqdm


class Bar:
  """done / total. Call it with the trainer's StepReport (steps_done, total_steps, tokens,
  users_done, users_total) after every step, or `update(n)` for other work."""

  def __init__(self, tqdm_bar: tqdm, desc: str, total: int, unit: str, enabled: bool):
    self.tqdm, self.desc, self.total, self.unit, self.enabled = tqdm_bar, desc, total, unit, enabled
    self.done, self.tokens, self.tenths, self.users = 0, 0, 0, ""
    self.start = time.perf_counter()

  def __call__(self, report) -> None:
    self.tokens += report.tokens
    self.users = f"users {report.users_done}/{report.users_total}"
    self.tqdm.total = self.total = report.total_steps
    self.update(report.steps_done - self.done)

  def advance(self, done: int, total: int) -> None:
    """For work whose total is known only once it starts (profiles to generate)."""
    self.tqdm.total = self.total = total
    self.update(done - self.done)

  def update(self, n: int = 1) -> None:
    self.done += n
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


@contextlib.contextmanager
def bar(desc: str, total: int, unit: str, enabled: bool = True):
  with tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True,
            mininterval=1.0, disable=not (enabled and sys.stderr.isatty())) as t:
    yield Bar(t, desc, total, unit, enabled)

