"""The papers' analyses on the embedded SmolLM2 (oppu_jax/analysis/): one workdir per task, every
analysis reusing what the others trained.

  python -m oppu_jax.main --config=configs/analysis.py:LaMP_3,k_sweep --workdir=runs/analysis_lamp3
  python -m oppu_jax.main --config=configs/analysis.py:LaMP_3,all --workdir=runs/analysis_lamp3
  python -m oppu_jax.report --workdir=runs/analysis_lamp3

The argument is `TASK,ANALYSIS` (ANALYSIS: behaviour_shift, activity, k_sweep, history_format,
peft_methods, similarity, efficiency, profile_gain, or all; the analysis is not part of the
workdir's fingerprint, so each command adds to the same workdir). The "analysis" recipe is the
embedded one on generated data whose 36 users have 4..48 history items (uniform), 12 of them test
users spread over that range (oppu_jax/config.py, ANALYSIS_DATA). Any task config takes the same
flag: `--config.analysis.name=k_sweep` on configs/lamp3.py analyses the default run's workdir.

Measured results: README.md, "Analyses".
"""

from oppu_jax import config


def get_config(arg: str = "LaMP_3,all"):
  task, _, name = (arg or "LaMP_3,all").partition(",")
  c = config.for_task(task, "analysis")
  c.analysis.name = name or "all"
  return c
