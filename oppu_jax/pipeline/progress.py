"""Progress bars for the stages: done / total, tokens per second, ETA (tqdm)."""

from __future__ import annotations

import contextlib
import sys
import time

from tqdm import tqdm


class _Bar:
  def __init__(self, bar: tqdm):
    self._bar = bar
    self._tokens = 0
    self._start = time.perf_counter()

  def update(self, n: int = 1) -> None:
    self._bar.update(n)

  def step_callback(self, count: str):
    """For the trainer's progress(tokens_in_step, users_finished): the bar advances by one per
    step (count="steps") or by the users finished (count="users")."""

    def on_step(tokens: int, finished: int) -> None:
      self._tokens += tokens
      rate = self._tokens / max(time.perf_counter() - self._start, 1e-9)
      self._bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
      self._bar.update(1 if count == "steps" else finished)

    return on_step


@contextlib.contextmanager
def bar(desc: str, total: int, unit: str, enabled: bool = True):
  with tqdm(total=total, desc=desc, unit=f" {unit}", disable=not enabled, file=sys.stderr,
            dynamic_ncols=True, mininterval=1.0) as t:
    yield _Bar(t)
