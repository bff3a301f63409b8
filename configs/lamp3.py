"""LaMP-3, product rating (1-5), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp3.py --workdir=/tmp/oppu_lamp3
  python -m oppu_jax.main --config=configs/lamp3.py:paper --workdir=... --config.model.path=...

With no data path, the run generates LaMP-format data (40 users; their ratings are their
reviews' sentiment shifted by a per-user habit), adapts the base to the task on the 32 other
users (LoRA on q,k,v, merged), trains one LoRA per test user (5 epochs of 4 at lr 3e-3, 8 users
side by side in one compiled step), and scores the five labels. Measured on the 2-core CPU
(2026-11-23, bf16 weights, the default): 3 min 50 s wall; 48 queries of 8 users:

  | setting          | mae     | rmse    |
  | non_personalized | 0.7083  | 1.0801  |
  | oppu_k0          | 0.2917* | 0.5401* |   * paired t-test vs non_personalized, p < 0.05

Re-run 2026-12-05 on a fresh install (jax 0.10.2): MAE 0.7292 / 0.3125*, 5 min 10 s (README);
2026-12-06 (multi-process code, one process): the same MAE, 5 min 34 s.
The generator's own oracles on this data: MAE 0.75 without the users' habits, 0.058 with them.
Over data seeds 0, 1, 2 (benchmarks/quality_seeds.py): oppu_k0 MAE 0.340 +- 0.043,
non_personalized 0.771 +- 0.286. `:paper` applies the OPPU paper's Table 4 values for
Llama-2-7B instead (oppu_jax/config.py).
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_3", recipe)
