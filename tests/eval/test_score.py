"""score_choices: packed tree-masked scoring equals the naive per-(row, choice) computation for
every PEFT method, rows are independent of their batch mates, and shapes compile once per bucket."""

import numpy as np
import pytest

import eval_fixtures as ef
from oppu_jax.eval.score import Programs, score_choices

# Multi-token choices of different lengths (the last one single-token), and one that shares a
# prefix with another, so the tree mask has to keep them apart.
CHOICES = [[7, 8, 2], [7, 9], [40, 41, 42, 2], [5]]
PROMPTS = [[3, 4, 5, 6], [11, 12, 13, 14, 15, 16, 17, 18, 19], [20], [30, 31, 32, 33, 34, 35],
           [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62], [70, 71]]
USERS = [0, 2, 1, 0, 2, 1]  # interleaved, so a batch mixes users


@pytest.fixture(scope="module")
def model():
  return ef.tiny_model()


def _naive(model, adapters, rows, choices):
  method = ef.method_of(adapters)
  out = np.zeros((len(rows), len(choices)))
  for r, (user, prompt) in enumerate(rows):
    adapter = ef.user_adapter(adapters, user)
    for j, choice in enumerate(choices):
      logp = ef.full_logprobs(model, method, adapter, list(prompt) + choice)
      p = len(prompt)
      out[r, j] = sum(logp[p - 1 + i, tok] for i, tok in enumerate(choice))
  return out


@pytest.mark.parametrize("name", ["lora", "ia3", "prompt", "none"])
def test_scores_equal_naive_per_choice_forward(model, name):
  method = ef.METHODS[name]
  adapters = ef.stacked_adapters(model, method)
  rows = list(zip(USERS, PROMPTS))
  got = score_choices(model, adapters, rows, CHOICES, batch_size=4, buckets=(32,))
  want = _naive(model, adapters, rows, CHOICES)
  np.testing.assert_allclose(got, want, atol=1e-4)
  if method is not None:  # the users' adapters really differ
    other = score_choices(model, adapters, [(1, p) for p in PROMPTS], CHOICES,
                          batch_size=4, buckets=(32,))
    assert np.abs(other - got).max() > 1e-3


def test_row_scores_do_not_depend_on_batch_mates(model):
  method = ef.METHODS["lora"]
  adapters = ef.stacked_adapters(model, method)
  rows = list(zip(USERS, PROMPTS))
  together = score_choices(model, adapters, rows, CHOICES, batch_size=4, buckets=(32,))
  for r, row in enumerate(rows):
    alone = score_choices(model, adapters, [row] * 3 + [(1, [9, 9, 9])], CHOICES,
                          batch_size=4, buckets=(32,))
    np.testing.assert_allclose(alone[0], together[r], atol=1e-5)
    np.testing.assert_allclose(alone[1], together[r], atol=1e-5)


def test_one_program_per_bucket(model):
  method = ef.METHODS["ia3"]
  adapters = ef.stacked_adapters(model, method)
  rng = np.random.default_rng(0)
  # Prompt lengths 3..20 all fit bucket 32 with the 4 tail tokens; 40..50 go to bucket 64.
  short = [(int(rng.integers(3)), list(rng.integers(3, 100, n))) for n in range(3, 21)]
  long = [(int(rng.integers(3)), list(rng.integers(3, 100, n))) for n in range(40, 51)]
  stats, programs = {}, Programs()
  score_choices(model, adapters, short, CHOICES, batch_size=4, buckets=(32, 64), stats=stats,
                programs=programs)
  assert stats["batches"] == 5 and stats["compilations"] == 1 and len(programs) == 1
  score_choices(model, adapters, short[:7] + long, CHOICES, batch_size=4, buckets=(32, 64),
                stats=stats, programs=programs)
  assert stats["batches"] == 5 and stats["compilations"] == 1  # bucket 64 only; 32 is reused
  # Another method is another program; a fresh Programs (the default) starts empty.
  score_choices(model, ef.stacked_adapters(model, ef.METHODS["lora"]), short[:4], CHOICES,
                batch_size=4, buckets=(32, 64), stats=stats, programs=programs)
  assert stats["compilations"] == 1 and len(programs) == 3
  score_choices(model, adapters, short[:4], CHOICES, batch_size=4, buckets=(32, 64), stats=stats)
  assert stats["compilations"] == 1


def test_bad_input_is_refused(model):
  with pytest.raises(ValueError, match="largest bucket"):
    score_choices(model, None, [(0, list(range(3, 40)))], CHOICES, buckets=(32,))
  adapters = ef.stacked_adapters(model, ef.METHODS["ia3"])
  with pytest.raises(TypeError, match="UserAdapters"):
    score_choices(model, adapters.tree, [(0, [3])], CHOICES)
  with pytest.raises(ValueError, match="out of range"):
    score_choices(model, adapters, [(ef.N_USERS, [3])], CHOICES)
