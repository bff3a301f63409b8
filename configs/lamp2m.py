"""LaMP_2M, movie tagging (15 tags), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp2m.py --workdir=/tmp/oppu_lamp2m

Generates LaMP-format data (40 users; each text fits 2-3 tags, each user prefers some), adapts
the base to the task, trains one LoRA per test user (3 epochs of 4 at lr 3e-3) and scores the 15
tags. Measured on the 2-core CPU (2026-11-23, bf16, the default): 4 min 01 s wall; 48 queries of
8 users:

  | setting          | accuracy | f1      |
  | non_personalized | 0.4167   | 0.3000  |
  | oppu_k0          | 0.7292*  | 0.5669* |   * paired test vs non_personalized, p < 0.05

Generator oracles (all 40 users): accuracy 0.442 from the text alone, 0.900 with the users'
preferences. `:paper` gives the OPPU paper's Table 4 values (oppu_jax/config.py).
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_2M", recipe)
