"""LaMP-3, product rating (1-5), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp3.py --workdir=/tmp/oppu_lamp3

With no data path, the run generates LaMP-format data (40 users; their ratings are their
reviews' sentiment shifted by a per-user habit), adapts the base to the task on the 32 other
users (LoRA on q,k,v, merged), trains one LoRA per test user (8 users side by side in one compiled
step), and scores the five labels. Measured on the 2-core CPU (2026-11-23, quiet machine, bf16
weights, the default): 2 min 35 s wall:

  | setting          | mae    | rmse   |
  | non_personalized | 0.8958 | 1.2990 |
  | oppu_k0          | 0.7292 | 1.1637 |

The generator's own oracles on this data: MAE 0.75 without the users' habits, 0.058 with them.
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_3", recipe)
