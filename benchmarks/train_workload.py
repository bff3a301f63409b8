"""The workload every train_bench.py method trains (scale.py's too): the LoRA and AdamW settings,
and the same synthetic per-user examples for every method (train_bench.py's docstring says how
they are made)."""

from __future__ import annotations

import numpy as np

from oppu_jax.data.batching import encode_pair
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.train import user_batches

RANK, ALPHA, DROPOUT, TARGETS = 8, 8.0, 0.05, ("q", "v")
LR, WEIGHT_DECAY, CLIP, WARMUP = 1e-4, 1e-2, 0.3, 0.1
SEED = 0

_WORDS = (
    "the a city council voted on new plan for school budget after long debate over taxes and "
    "roads while local business owners said prices rose again this year as weather hurt crops "
    "in river valley where farmers wait rain police report fire near old market team won final "
    "game coach praised young players fans cheered market stocks fell bank raised rates "
    "scientists found water on distant planet doctors warn about flu season").split()

def make_plans(args) -> list[user_batches.UserPlan]:
  """U users x N examples: 'Generate a headline ...: <article>' -> a short headline + EOS."""
  tok = Tokenizer.from_gguf()
  instruction = "Generate a headline for the following article: "
  keep_head = len(tok.encode(instruction))  # the cut-off trims the article, not the instruction
  plans = []
  for user in range(args.users):
    rng = np.random.default_rng([SEED, user])
    examples = []
    for _ in range(args.examples_per_user):
      article = " ".join(rng.choice(_WORDS, size=2 * args.seq_len))
      headline = " " + " ".join(w.capitalize() for w in rng.choice(_WORDS, size=rng.integers(2, 5)))
      # Total length varies over the last ~10 % of seq_len, so batches carry some padding.
      cutoff = int(rng.integers(int(args.seq_len * 0.9), args.seq_len + 1))
      examples.append(encode_pair(instruction + article, headline, tok.encode, eos_id=tok.eos_id,
                                  cutoff=cutoff, keep_head=keep_head))
    plans.append(user_batches.plan_user(
        f"user{user}", examples, batch_size=args.batch_size, epochs=args.epochs,
        seq_buckets=(args.seq_len,), target_buckets=(8, 16)))
  return plans

