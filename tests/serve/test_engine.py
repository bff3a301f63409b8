"""The serving engine: a request in a mixed-user batch gets exactly its single-request output
(and generate_for_rows's); sampling depends on the seed only; a cancelled request frees its row
and adapter; an adapter that is still being read holds nobody else up; scoring equals
score_choices; overload and shutdown are refused cleanly."""

import threading
import time

import numpy as np
import pytest

from oppu_jax.eval import score
from oppu_jax.eval.decode import generate_for_rows
from oppu_jax.models.decoding import Decoding
from oppu_jax.serve.engine import Engine, EngineConfig, Generate, Overloaded, Score, ShuttingDown
from oppu_jax.serve.residency import AdapterTiers

PROMPTS = [[5, 17, 33, 91], [44, 9, 71, 3, 100, 12, 7, 60, 61], [8], [20, 21, 22, 23, 24, 25],
           [90, 80, 70]]
USERS = [2, 0, 1, 2, 1]
N = 6
EOS = -1  # no token ends a row early: every request runs its full length
CONFIG = EngineConfig(slots=4, buckets=(16,), max_new_tokens=N)


def _engine(model, adapters, config=CONFIG, read=None, device_slots=2, **kw):
  """An engine over users "u0".."u2" (their adapters read from the stack; `read` overrides)."""
  read = read or (lambda user: adapters.user(int(user[1:])))
  tiers = AdapterTiers(adapters.method, adapters.user(0), read, device_slots=device_slots,
                       host_capacity=8)
  return Engine(model, tiers, config, eos_id=EOS, pad_id=0, **kw).start()


def _generate(engine, user, prompt, **kw):
  return engine.submit(Generate(f"u{user}", prompt, max_new_tokens=kw.pop("n", N), **kw))


@pytest.mark.slow
def test_mixed_users_give_each_request_its_single_request_output(model, adapters):
  engine = _engine(model, adapters)
  try:
    together = [_generate(engine, u, p) for u, p in zip(USERS, PROMPTS)]
    together = [t.wait(120).tokens for t in together]
    alone = [_generate(engine, u, p).wait(120).tokens for u, p in zip(USERS, PROMPTS)]
  finally:
    engine.stop()
  assert together == alone
  assert all(len(t) == N for t in together)
  # The pipeline's batched decoder (rows padded to the same bucket) agrees token for token.
  greedy = Decoding(max_new_tokens=N, batch_size=4, prompt_buckets=(16,))
  assert together == generate_for_rows(model, adapters, list(zip(USERS, PROMPTS)), greedy,
                                       eos_id=EOS, pad_id=0)
  # Only 2 device slots for 3 users: adapters were evicted and uploaded again on the way.
  assert engine.tiers.counts["uploads"] > 3


@pytest.mark.slow
def test_sampling_depends_on_the_seed_only(model, adapters):
  engine = _engine(model, adapters)
  try:
    kw = dict(temperature=1.0, top_p=0.9)
    alone = _generate(engine, 0, PROMPTS[0], seed=7, **kw).wait(120).tokens
    crowd = [_generate(engine, u, p, seed=s, **kw) for s, (u, p) in enumerate(zip(USERS, PROMPTS))]
    again = _generate(engine, 0, PROMPTS[0], seed=7, **kw)
    other = _generate(engine, 0, PROMPTS[0], seed=8, **kw)
    [t.wait(120) for t in crowd]
    assert again.wait(120).tokens == alone
    assert other.wait(120).tokens != alone
  finally:
    engine.stop()


@pytest.mark.slow
def test_a_cancelled_request_frees_its_row_and_adapter(model, adapters):
  engine = _engine(model, adapters, config=EngineConfig(slots=1, buckets=(16,),
                                                          max_new_tokens=64))
  try:
    first = _generate(engine, 0, PROMPTS[0], n=64)
    while not first.tokens:
      time.sleep(0.01)
    second = _generate(engine, 1, PROMPTS[1], n=3)  # waits: the only row is taken
    engine.cancel(first)
    assert second.wait(120).finish_reason == "length"
    assert first.wait(1).finish_reason == "cancelled" and len(first.tokens) < 64
    assert engine.load() == {"running": 0, "waiting": 0, "pinned_adapters": 0}
  finally:
    engine.stop()


@pytest.mark.slow
def test_an_adapter_being_read_holds_nobody_up(model, adapters):
  release = threading.Event()

  def read(user):
    if user == "u2":
      release.wait(60)  # a slow disk
    return adapters.user(int(user[1:]))

  engine = _engine(model, adapters, read=read)
  try:
    slow = _generate(engine, 2, PROMPTS[0])
    fast = [_generate(engine, u, p) for u, p in [(0, PROMPTS[1]), (1, PROMPTS[2])]]
    assert [t.wait(120).finish_reason for t in fast] == ["length", "length"]
    assert not slow.done
    release.set()
    assert slow.wait(120).finish_reason == "length"
  finally:
    release.set()
    engine.stop()


def test_a_broken_adapter_fails_its_request_only(model, adapters):
  def read(user):
    if user == "u1":
      raise ValueError("u1/adapter_model.safetensors: not a readable safetensors file")
    return adapters.user(int(user[1:]))

  engine = _engine(model, adapters, read=read)
  try:
    bad, good = _generate(engine, 1, PROMPTS[0], n=2), _generate(engine, 0, PROMPTS[0], n=2)
    assert bad.wait(120).finish_reason == "error" and "safetensors" in str(bad.error)
    assert good.wait(120).finish_reason == "length"
  finally:
    engine.stop()


@pytest.mark.slow
def test_scores_equal_score_choices(model, adapters):
  choices = ((7, 3), (9,), (11, 12, 13))
  engine = _engine(model, adapters, device_slots=3)
  try:
    tickets = [engine.submit(Score(f"u{u}", p, choices)) for u, p in zip(USERS, PROMPTS)]
    got = np.stack([t.wait(120).scores for t in tickets])
  finally:
    engine.stop()
  want = score.score_choices(model, adapters, list(zip(USERS, PROMPTS)), choices)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_requests_overload_and_shutdown_are_refused(model, adapters):
  engine = _engine(model, adapters, config=EngineConfig(slots=1, buckets=(16,), max_new_tokens=N,
                                                        max_waiting=1))
  with pytest.raises(ValueError, match="at most 16"):
    _generate(engine, 0, list(range(1, 18)))
  with pytest.raises(ValueError, match="max_tokens"):
    _generate(engine, 0, PROMPTS[0], n=N + 1)
  with pytest.raises(ValueError, match="empty"):
    _generate(engine, 0, [])
  engine.stop()  # nothing runs now: requests queue up without being taken
  with pytest.raises(ShuttingDown):
    _generate(engine, 0, PROMPTS[0])
  waiting = Engine(engine.model, engine.tiers, engine.config, eos_id=EOS, pad_id=0)  # not started
  waiting.submit(Generate("u0", PROMPTS[0], 2))
  with pytest.raises(Overloaded, match="retry"):
    waiting.submit(Generate("u0", PROMPTS[0], 2))


def test_a_failing_step_ends_its_requests_and_the_engine_goes_on(model, adapters, monkeypatch):
  from oppu_jax.serve import pool as pool_lib

  engine = _engine(model, adapters)
  real_step, calls = pool_lib.Pool.step, []

  def step_once_broken(self, forward):
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError("device lost")
    return real_step(self, forward)

  monkeypatch.setattr(pool_lib.Pool, "step", step_once_broken)
  try:
    broken = _generate(engine, 0, PROMPTS[0]).wait(120)
    assert broken.finish_reason == "error" and "device lost" in str(broken.error)
    after = _generate(engine, 1, PROMPTS[1]).wait(120)
    assert after.finish_reason == "length" and len(after.tokens) == N
    assert engine.load() == {"running": 0, "waiting": 0, "pinned_adapters": 0}
  finally:
    engine.stop()
