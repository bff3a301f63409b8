"""The base config, the per-task differences, the task config files, and the config check."""

import importlib.util
import os

import pytest

from oppu_jax import config as config_lib
from oppu_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = {"lamp1": "LaMP_1", "lamp2n": "LaMP_2N", "lamp2m": "LaMP_2M", "lamp3": "LaMP_3",
         "lamp4": "LaMP_4", "lamp5": "LaMP_5", "lamp6": "LaMP_6", "lamp7": "LaMP_7"}


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_config_file_is_the_base_with_its_task_differences(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert c.task == FILES[name]
  assert c.to_dict() == config_lib.for_task(FILES[name]).to_dict()
  assert module.get_config("paper").to_dict() == config_lib.for_task(FILES[name], "paper").to_dict()
  assert module.__doc__.count(f"--config=configs/{name}.py --workdir") == 1
  config_lib.check(c)


def test_task_differences_are_real_differences():
  assert set(config_lib.TASK_DIFFERENCES) == set(FILES.values())
  base = config_lib.get_config()
  for task, diff in config_lib.TASK_DIFFERENCES.items():
    c = config_lib.for_task(task)
    for key, value in diff.items():
      section, leaf = key.split(".")
      assert base[section][leaf] != value, (task, key)
      assert c[section][leaf] == value
  assert config_lib.for_task("LaMP_1").train.epochs == 3
  assert base.model.backend == "auto"


def test_the_paper_recipe_is_table_4():
  # OPPU Table 4: (epochs, batch size, R2 reg.) per task; lr 1e-5 and rank 8 on W_q, W_v for all.
  table_4 = {"LaMP_1": (3, 16, 1e-2), "LaMP_2N": (3, 16, 1e-2), "LaMP_2M": (3, 4, 1e-2),
             "LaMP_3": (3, 3, 1e-2), "LaMP_4": (2, 8, 1e-1), "LaMP_5": (2, 4, 1e-1),
             "LaMP_7": (2, 8, 1e-1)}
  for task, (epochs, batch, reg) in table_4.items():
    c = config_lib.for_task(task, "paper")
    assert (c.train.epochs, c.train.batch_size, c.train.weight_decay) == (epochs, batch, reg)
    assert (c.train.learning_rate, c.peft.rank, tuple(c.peft.targets)) == (1e-5, 8, ("q", "v"))
    assert c.recipe == "paper"
    embedded = config_lib.for_task(task)
    # The embedded recipe: the paper's regularisation, epochs and batch size capped at 4, except
    # LaMP_3's tuned 5 epochs of 4.
    assert embedded.train.weight_decay == reg
    assert embedded.train.epochs == (5 if task == "LaMP_3" else epochs)
    assert embedded.train.batch_size == (4 if task == "LaMP_3" else min(batch, 4))
  with pytest.raises(ConfigError, match="unknown recipe"):
    config_lib.for_task("LaMP_3", "papr")


def test_check_names_the_key():
  with pytest.raises(ConfigError, match="^config.task: "):
    config_lib.for_task("LaMP_9")
  c = config_lib.for_task("LaMP_4")
  c.task = "LaMP-9"
  with pytest.raises(ConfigError, match="^config.task: unknown task 'LaMP-9'"):
    config_lib.check(c)
  c.task = "LaMP-4"  # an alias the data loader accepts
  config_lib.check(c)
  c.eval.decoding = "nucleus"
  with pytest.raises(ConfigError, match="^config.eval.decoding: unknown 'nucleus'; expected one"):
    config_lib.check(c)
  c.eval.decoding = "greedy"
  c.model.cutoff = 32
  with pytest.raises(ConfigError, match="^config.model.cutoff: 32 leaves no room"):
    config_lib.check(c)


def test_analysis_config_file():
  spec = importlib.util.spec_from_file_location("analysis", os.path.join(REPO, "configs",
                                                                          "analysis.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("LaMP_5,k_sweep")
  assert (c.task, c.recipe, c.analysis.name) == ("LaMP_5", "analysis", "k_sweep")
  assert c.data.test_users == "spread" and c.data.synth.long_tail is False
  assert c.train.weight_decay == config_lib.for_task("LaMP_5").train.weight_decay  # the task's
  assert module.get_config("LaMP_3").analysis.name == "all"
  config_lib.check(c)
  c.data.test_users = "busiest"
  with pytest.raises(ConfigError, match="config.data.test_users: unknown 'busiest'"):
    config_lib.check(c)
