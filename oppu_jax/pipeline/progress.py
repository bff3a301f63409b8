"""Progress of a stage: a bar over steps (or queries) with tokens/s and an ETA on a terminal, one
log line per ~10 % elsewhere (a log file, CI)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import types

from tqdm import tqdm


class Bar:
  """Counts done / total; called with the trainer's StepReport (steps_done, total_steps, tokens,
  users_done, users_total) after every step, or `update(n)` for other work."""

  def __init__(self, desc: str, total: int, unit: str, enabled: bool):
    self.desc, self.unit, self.enabled = desc, unit, enabled
    self.tty = enabled and sys.stderr.isatty()
    self._tqdm = tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr,
                      dynamic_ncols=True, mininterval=1.0, disable=not self.tty)
    self._done, self._tokens, self._logged = 0, 0, 0
    self._start = time.perf_counter()
    self._users = ""

  def __call__(self, report) -> None:
    self._tokens += report.tokens
    self._users = f"users {report.users_done}/{report.users_total}"
    self._tqdm.total = report.total_steps
    self.update(report.steps_done - self._done)

  def update(self, n: int = 1) -> None:
    self._done += n
    elapsed = max(time.perf_counter() - self._start, 1e-9)
    rate = f"{self._tokens / elapsed:,.0f} tok/s" if self._tokens else ""
    postfix = ", ".join(p for p in (rate, self._users) if p)
    if self.tty:
      self._tqdm.set_postfix_str(postfix, refresh=False)
      self._tqdm.update(n)
      return
    total = self._tqdm.total or 1
    tenth = 10 * self._done // total
    if self.enabled and tenth > self._logged:
      self._logged = tenth
      eta = elapsed * (total - self._done) / max(self._done, 1)
      logging.info("%s: %d/%d %s (%d %%), %s, ETA %s", self.desc, self._done, total, self.unit,
                   100 * self._done // total, postfix or "-", _clock(eta))


@contextlib.contextmanager
def bar(desc: str, total: int, unit: str, enabled: bool = True):
  b = Bar(desc, total, unit, enabled)
  try:
    yield b
  finally:
    b._tqdm.close()


def from_legacy(on_report, total_steps: int, users_total: int, slots: int):
  """Today's trainer callback progress(tokens, users_finished) -> a StepReport for `on_report`.
  Until the trainer reports steps itself, a step is counted as one per busy slot, which is
  exact for one batch shape (slots refill from the queue until it runs dry)."""
  done = {"steps": 0, "users": 0}

  def on_step(tokens: int, finished: int) -> None:
    done["steps"] += min(slots, users_total - done["users"])
    done["users"] += finished
    on_report(types.SimpleNamespace(steps_done=min(done["steps"], total_steps),
                                    total_steps=total_steps, tokens=tokens,
                                    users_done=done["users"], users_total=users_total))

  return on_step


def _clock(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"
