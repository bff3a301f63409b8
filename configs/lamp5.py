"""LaMP_5, scholarly title generation, on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp5.py --workdir=/tmp/oppu_lamp5

Generates LaMP-format data (40 users; a title is the abstract's first words in the user's
style: a signature prefix, a case style, a length), adapts the base to the task, trains one LoRA
per test user (2 epochs of 4 at lr 3e-3) and decodes greedily. Measured on the 2-core CPU
(2026-11-23, bf16, the default): 2 min 03 s wall; 48 queries of 8 users:

  | setting          | rouge-1 | rouge-L |
  | non_personalized | 0.7129  | 0.7060  |
  | oppu_k0          | 0.8429* | 0.8368* |   * paired t-test vs non_personalized, p < 0.05

Generator oracles (all 40 users): ROUGE-1 0.811 from the text alone, 0.983 with the users'
styles. `:paper` gives the OPPU paper's Table 4 values (oppu_jax/config.py).
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_5", recipe)
