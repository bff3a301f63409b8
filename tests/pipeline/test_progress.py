"""progress: a bar over steps, one log line per ~10 % off a terminal, today's trainer callback;
the stage summaries a recording run keeps (timings.json) and its trace windows."""

import glob
import logging
import types

from oppu_jax.pipeline import progress


def _report(done, total, tokens=100, users_done=0, users_total=2):
  return types.SimpleNamespace(steps_done=done, total_steps=total, tokens=tokens,
                               users_done=users_done, users_total=users_total, computed=tokens,
                               idle_slots=0)


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



def test_advance_sets_a_total_known_late(caplog, monkeypatch):
  """Profile generation learns how many profiles it must write only once it starts."""
  monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
  caplog.set_level(logging.INFO)
  with progress.bar("PAG profiles", 40, "users") as bar:
    for done in (8, 16, 20):
      bar.advance(done, 20)
  lines = [r.getMessage() for r in caplog.records]
  assert lines[-1].startswith("PAG profiles: 20/20 users (100 %)")
  assert bar.total == 20 and len(lines) == 3


def test_evaluation_reports_each_batch(tiny_model_dir):
  """score_choices and generate_for_rows call progress with each batch's rows: the bar moves
  during evaluation, not once at its end."""
  from oppu_jax.eval import decode, score
  from oppu_jax.models import load
  from oppu_jax.models.decoding import Decoding

  model, _ = load.load_model(tiny_model_dir, compute_dtype="float32")
  rows = [(0, [1, 5, 6, 7][:n]) for n in (2, 3, 4, 2, 3)]
  seen = []
  score.score_choices(model, None, rows, [[9], [10]], batch_size=2, progress=seen.append)
  assert seen == [2, 2, 1]
  seen.clear()
  decode.generate_for_rows(model, None, rows, Decoding(max_new_tokens=2, batch_size=4),
                           eos_id=2, pad_id=2, progress=seen.append)
  assert seen == [4, 1]


def test_a_recording_keeps_each_stage_and_traces_its_window(tmp_path):
  import jax
  import jax.numpy as jnp

  step = jax.jit(lambda x: jnp.sin(x) * 2.71828 + 0.5772)  # its own program: compiled here
  with progress.recording(str(tmp_path), skip=1, steps=2) as stages:
    with progress.bar("stage 2: x adapters", 4, "steps", enabled=False) as bar:
      for n in range(1, 5):
        step(jnp.full((3,), float(n))).block_until_ready()
        bar(types.SimpleNamespace(steps_done=n, total_steps=4, tokens=6, users_done=0,
                                  users_total=1, computed=8, idle_slots=1))
    with progress.bar("stage 3: x", 2, "queries", enabled=False) as bar:
      bar.update(2)
  assert [s["stage"] for s in stages] == ["stage 2: x adapters", "stage 3: x"]
  trained, scored = stages
  assert trained["compiled_steps"] == 4 and trained["real_tokens"] == 24
  assert trained["padding_share"] == 0.25 and trained["idle_slot_steps"] == 4
  assert trained["compilations"] >= 1 and trained["traced"]["ticks"] == 2
  assert glob.glob(str(tmp_path / "stage_2_x_adapters" / "**" / "*.json.gz"), recursive=True)
  assert scored["queries"] == 2 and "compiled_steps" not in scored
  with progress.bar("outside", 1, "steps", enabled=False) as bar:  # no recording: nothing kept
    bar.update(1)
  assert len(stages) == 2
