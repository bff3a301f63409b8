"""LaMP_5, scholarly title generation, on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp5.py --workdir=/tmp/oppu_lamp5

Generates LaMP-format data (40 users; a title is the abstract's first words in the user's
style: a signature prefix, a case style, a length), adapts the base to the task, trains one LoRA
per test user (2 epochs of 4 at lr 3e-3) and decodes greedily. Expected result (48 queries of
8 users): docs/results/lamp5/results.md, made by `python scripts/results.py lamp5` (its run.md:
when, commit, machine, versions, wall time).

Generator oracles (all 40 users; benchmarks/oracles.py): ROUGE-1 0.811 from the text alone, 0.983
with the users' styles. `:paper` gives the OPPU paper's Table 4 values (oppu_jax/config.py).
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_5", recipe)
