"""LaMP_2M, movie tagging (15 tags), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp2m.py --workdir=/tmp/oppu_lamp2m

Generates LaMP-format data (40 users; each text fits 2-3 tags, each user prefers some), adapts
the base to the task, trains one LoRA per test user (3 epochs of 4 at lr 3e-3) and scores the 15
tags. Expected result (48 queries of 8 users): docs/results/lamp2m/results.md, made by
`python scripts/results.py lamp2m` (its run.md: when, commit, machine, versions, wall time).

Generator oracles (all 40 users; benchmarks/oracles.py): accuracy 0.442 from the text alone, 0.900
with the users' preferences. `:paper` gives the OPPU paper's Table 4 values (oppu_jax/config.py).
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_2M", recipe)
