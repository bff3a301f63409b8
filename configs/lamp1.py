"""LaMP_1, citation identification ([1] or [2]), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp1.py --workdir=/tmp/oppu_lamp1

With no data path, the run generates LaMP-format LaMP_1 data with learnable per-user preferences
(oppu_jax/data/synth.py), adapts the base to the task on the other users, trains one adapter per
test user, and reports accuracy and F1 for non_personalized and oppu_k0 in results.md.
Expected result: not yet measured on this machine for LaMP_1 (the measured run is configs/lamp3.py;
see the README). Run the whole Table 1 grid with --config.settings=all.
"""

from oppu_jax import config as base


def get_config():
  c = base.get_config()
  c.task = "LaMP_1"
  c.train.epochs = 3  # the paper: 3 epochs for classification tasks
  # The history is not in the task's shape: per-user training is next-token on the item
  # text (the paper's choice; 'convert' gives the PEFT-vs-RAG study's pairs).
  c.data.history_mode = "oppu"
  return c
