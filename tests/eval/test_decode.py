"""generate_for_rows: a mixed-user batch decodes each row as that row alone with its own adapter,
and as token-by-token argmax of the full-recompute adapted.forward; beams keep their row's adapter."""

import dataclasses

import numpy as np
import pytest

import eval_fixtures as ef
from oppu_jax.eval.decode import generate_for_rows
from oppu_jax.models.decoding import Decoding

PROMPTS = [[5, 17, 33, 91], [44, 9, 71, 3, 100, 12, 7, 60, 61], [8], [20, 21, 22, 23, 24, 25],
           [90, 80, 70]]
USERS = [2, 0, 1, 2, 1]
N = 8
GREEDY = Decoding(max_new_tokens=N, batch_size=4, prompt_buckets=(16,))
KW = dict(eos_id=-1, pad_id=0)


@pytest.fixture(scope="module")
def model():
  return ef.tiny_model(scale=0.15)  # peaked distributions: argmax is not decided by float noise


def _recompute_greedy(model, method, adapter, prompt):
  seq = list(prompt)
  for _ in range(N):
    seq.append(int(np.argmax(ef.full_logprobs(model, method, adapter, seq)[-1])))
  return seq[len(prompt):]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lora", "ia3", "prompt", "none"])
def test_greedy_mixed_batch_equals_each_row_alone_and_full_recompute(model, name):
  method = ef.METHODS[name]
  adapters = ef.stacked_adapters(model, method)
  rows = list(zip(USERS, PROMPTS))
  together = generate_for_rows(model, adapters, rows, GREEDY, **KW)
  for (user, prompt), got in zip(rows, together):
    assert len(got) == N
    assert got == _recompute_greedy(model, method, ef.user_adapter(adapters, user), prompt)
    if name in ("lora", "ia3"):  # (one more program each; the others share this code path)
      assert got == generate_for_rows(model, adapters, [(user, prompt)], GREEDY, **KW)[0]
  if method is not None:  # the users' adapters matter
    others = generate_for_rows(model, adapters, [((u + 1) % ef.N_USERS, p) for u, p in rows],
                               GREEDY, **KW)
    assert others != together


@pytest.mark.slow
def test_beam_rows_keep_their_users_adapter(model):
  method = ef.METHODS["lora"]
  adapters = ef.stacked_adapters(model, method)
  rows = list(zip(USERS, PROMPTS))
  beam = dataclasses.replace(GREEDY, method="beam", num_beams=3)
  together = generate_for_rows(model, adapters, rows, beam, **KW)
  for row, got in zip(rows, together):
    assert got == generate_for_rows(model, adapters, [row], beam, **KW)[0]
  others = generate_for_rows(model, adapters, [((u + 1) % ef.N_USERS, p) for u, p in rows],
                             beam, **KW)
  assert others != together


def test_sampling_with_prompt_tuning_runs_and_is_reproducible(model):
  method = ef.METHODS["prompt"]
  adapters = ef.stacked_adapters(model, method)
  rows = list(zip(USERS, PROMPTS))
  sample = dataclasses.replace(GREEDY, method="sample", temperature=0.7, top_k=10, top_p=0.9,
                               seed=3)
  kw = dict(KW, eos_id=2)
  first = generate_for_rows(model, adapters, rows, sample, **kw)
  assert first == generate_for_rows(model, adapters, rows, sample, **kw)
  assert all(2 not in ids and len(ids) <= N for ids in first)


def test_bad_user_index_is_refused(model):
  adapters = ef.stacked_adapters(model, ef.METHODS["ia3"])
  with pytest.raises(ValueError, match="out of range"):
    generate_for_rows(model, adapters, [(7, [3])], GREEDY, **KW)


def test_rows_forward_is_equal_for_equal_graphs(model):
  """generate's jitted loops key their programs on the forward's function: two calls on the same
  architecture must hand them equal (and equally hashed) functions, or every call recompiles."""
  from flax import nnx

  from oppu_jax.eval.decode import RowsForward

  a, b = RowsForward(nnx.split(model)[0]), RowsForward(nnx.split(ef.tiny_model())[0])
  assert a == b and hash(a) == hash(b)
  assert a != RowsForward(nnx.split(ef.tiny_model(num_layers=3))[0])
