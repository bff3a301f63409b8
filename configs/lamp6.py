"""LaMP_6, email subject generation (private data upstream: format only), on the embedded
SmolLM2-135M-Instruct.

  python -m oppu_jax.main --config=configs/lamp6.py --workdir=/tmp/oppu_lamp6

Generates synthetic LaMP-format data (no data.path), adapts the base to the task, trains one adapter
per test user and reports ROUGE-1 and ROUGE-L in results.md. Not yet measured (the measured run is
configs/lamp3.py). Differences from the base: oppu_jax/config.py TASK_DIFFERENCES.
"""

from oppu_jax import config


def get_config(recipe=None):
  return config.for_task("LaMP_6", recipe)
