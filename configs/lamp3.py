"""LaMP-3, product rating (1-5), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp3.py --workdir=/tmp/oppu_lamp3
  python -m oppu_jax.main --config=configs/lamp3.py:paper --workdir=... --config.model.path=...

With no data path, the run generates LaMP-format data (40 users; their ratings are their
reviews' sentiment shifted by a per-user habit), adapts the base to the task on the 32 other
users (LoRA on q,k,v, merged), trains one LoRA per test user (5 epochs of 4 at lr 3e-3, 8 users
side by side in one compiled step), and scores the five labels. Expected result (48 queries of
8 users; oppu_k0's MAE well below non_personalized's, marked * by the paired t-test): the files of
`python scripts/results.py lamp3`, docs/results/lamp3/results.md, with run.md saying when, on
which commit, machine and library versions it was made, and in how long.
The generator's own oracles on this data (benchmarks/oracles.py): MAE 0.75 from the text alone,
0.058 from each user's history.
Over data seeds 0, 1, 2: `python scripts/results.py lamp3_seeds`. `:paper` applies the OPPU
paper's Table 4 values for Llama-2-7B instead (oppu_jax/config.py).
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_3", recipe)
