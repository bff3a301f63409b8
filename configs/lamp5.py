"""LaMP_5, scholarly title generation, on the embedded SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp5.py --workdir=/tmp/oppu_lamp5

With no data path, the run generates LaMP-format LaMP_5 data with learnable per-user preferences
(oppu_jax/data/synth.py), adapts the base to the task on the other users, trains one adapter per
test user, and reports ROUGE-1 and ROUGE-L for non_personalized and oppu_k0 in results.md.
Expected result: not yet measured on this machine for LaMP_5 (the measured run is configs/lamp3.py;
see the README). Run the whole Table 1 grid with --config.settings=all.
"""

from oppu_jax import config as base


def get_config():
  c = base.get_config()
  c.task = "LaMP_5"
  c.train.epochs = 2  # the paper: 2 epochs for generation tasks
  c.task_adapt.epochs = 2
  return c
