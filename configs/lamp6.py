"""LaMP_6, email subject generation (private data upstream: format only), on the embedded
SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp6.py --workdir=/tmp/oppu_lamp6

Generates synthetic LaMP-format data (no data.path), adapts the base to the task, trains one adapter
per test user and reports ROUGE-1 and ROUGE-L in results.md. Not measured on the embedded model
(measured: configs/lamp2m.py, lamp3.py, lamp5.py). Differences from the base: oppu_jax/config.py
TASK_DIFFERENCES; `:paper` gives the OPPU paper's Table 4 values.
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_6", recipe)
