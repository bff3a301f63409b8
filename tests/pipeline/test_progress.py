"""progress: a bar over steps, one log line per ~10 % off a terminal, today's trainer callback."""

import logging
import types

from oppu_jax.pipeline import progress


def _report(done, total, tokens=100, users_done=0, users_total=2):
  return types.SimpleNamespace(steps_done=done, total_steps=total, tokens=tokens,
                               users_done=users_done, users_total=users_total)


def test_off_a_terminal_it_logs_about_every_tenth(caplog, monkeypatch):
  monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
  caplog.set_level(logging.INFO)
  with progress.bar("stage 2: oppu_k0 adapters", 40, "steps") as bar:
    for step in range(1, 41):
      bar(_report(step, 40, users_done=step // 20))
  lines = [r.getMessage() for r in caplog.records]
  assert len(lines) == 10
  assert lines[0].startswith("stage 2: oppu_k0 adapters: 4/40 steps (10 %), ")
  assert "tok/s, users 0/2, ETA" in lines[0]
  assert lines[-1].startswith("stage 2: oppu_k0 adapters: 40/40 steps (100 %)")
  assert "users 2/2" in lines[-1]


def test_disabled_bar_is_silent(caplog, monkeypatch):
  monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
  caplog.set_level(logging.INFO)
  with progress.bar("stage 3", 5, "queries", enabled=False) as bar:
    bar.update(5)
  assert not caplog.records

