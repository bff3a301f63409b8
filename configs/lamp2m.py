"""LaMP_2M, movie tagging (15 tags), on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp2m.py --workdir=/tmp/oppu_lamp2m

With no data path, the run generates LaMP-format LaMP_2M data with learnable per-user preferences
(oppu_jax/data/synth.py), adapts the base to the task on the other users, trains one adapter per
test user, and reports accuracy and F1 for non_personalized and oppu_k0 in results.md.
Expected result: not yet measured on this machine for LaMP_2M (the measured run is configs/lamp3.py;
see the README). Run the whole Table 1 grid with --config.settings=all.
"""

from oppu_jax import config as base


def get_config():
  c = base.get_config()
  c.task = "LaMP_2M"
  c.train.epochs = 3  # the paper: 3 epochs for classification tasks
  return c
