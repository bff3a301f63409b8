"""A tiny synthetic task for trainer tests: each user answers every prompt with its own token."""

import numpy as np

from oppu_jax.data.batching import Example
from oppu_jax.train import user_batches as ub

EOS = 2


def user_examples(user_index: int, n: int, seed: int, answer: int | None = None):
  rng = np.random.default_rng([seed, user_index])
  answer = 40 + user_index if answer is None else answer
  examples = []
  for _ in range(n):
    prompt = rng.integers(3, 30, size=int(rng.integers(4, 10)))
    tokens = np.concatenate([prompt, [answer, EOS]]).astype(np.int32)
    target = np.zeros(len(tokens), bool)
    target[-2:] = True
    examples.append(Example(tokens, target))
  return examples


def plan(user_index: int, n: int, seed: int = 0, epochs: int = 2, batch_size: int = 4, **kw):
  return ub.plan_user(f"user{user_index}", user_examples(user_index, n, seed, **kw),
                      batch_size=batch_size, epochs=epochs, seq_buckets=(16, 32),
                      target_buckets=(2, 4, 8))
