"""LaMP-3, product rating (1-5), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp3.py --workdir=/tmp/oppu_lamp3

With no data path, the run generates LaMP-format data whose users rate harsher or kinder than
their reviews' sentiment, adapts the base to the task on the 40 other users, trains one LoRA per
test user (8 users side by side), and scores the five labels. Expected on a 2-core CPU:
(see the README for the measured table) oppu_k0 has a lower MAE than non_personalized.
"""

from oppu_jax import config as base


def get_config():
  c = base.get_config()
  c.task = "LaMP_3"
  return c
