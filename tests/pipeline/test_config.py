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


def test_for_task_rejects_an_unknown_key(monkeypatch):
  # A typo in a recipe's table would otherwise add a field nothing reads, losing the value.
  monkeypatch.setitem(config_lib.TASK_DIFFERENCES, "LaMP_3", {"model.cutof": 256})
  with pytest.raises(ConfigError, match=r"^config\.model\.cutof: unknown key; did you mean "
                                        r"cutoff\?$"):
    config_lib.for_task("LaMP_3")
  monkeypatch.setitem(config_lib.TASK_DIFFERENCES, "LaMP_3", {"data.synth.num_usres": 9})
  with pytest.raises(ConfigError, match=r"^config\.data\.synth\.num_usres: unknown key; did you "
                                        r"mean num_users\?$"):
    config_lib.for_task("LaMP_3")
  # A misspelt section, and a key under a leaf (not a section): no close match, no hint.
  monkeypatch.setitem(config_lib.TASK_DIFFERENCES, "LaMP_3", {"trian.epochs": 3})
  with pytest.raises(ConfigError, match=r"^config\.trian\.epochs: unknown key; did you mean "
                                        r"train\?$"):
    config_lib.for_task("LaMP_3")
  monkeypatch.setitem(config_lib.TASK_DIFFERENCES, "LaMP_3", {"train.epochs.max": 3})
  with pytest.raises(ConfigError, match=r"^config\.train\.epochs\.max: unknown key$"):
    config_lib.for_task("LaMP_3")


def _keys(d: dict, prefix: str = "") -> set[str]:
  return {k for key, v in d.items()
          for k in (_keys(v, f"{prefix}{key}.") if isinstance(v, dict) else {prefix + key})}


def test_every_recipe_sets_only_known_keys():
  base = _keys(config_lib.get_config().to_dict())
  assert "data.synth.num_users" in base
  for task in config_lib.TASK_DIFFERENCES:
    for recipe in config_lib.RECIPES:
      assert _keys(config_lib.for_task(task, recipe).to_dict()) == base, (task, recipe)


def test_choices_are_checked_once_with_one_message():
  # TrainConfig and random_history_corpus check CHOICES' values with config.check's message.
  from oppu_jax.pipeline import examples
  from oppu_jax.train import multi_user, scheduler

  assert config_lib.CHOICES["train.schedule"] == ("auto", *scheduler.POLICIES)
  c = config_lib.for_task("LaMP_3")
  for key, bad in (("train.remat", "sometimes"), ("train.schedule", "fifo"),
                   ("data.random_history", "everyone")):
    section, leaf = key.split(".")
    c[section][leaf] = bad
    with pytest.raises(ConfigError) as from_check:
      config_lib.check(c)
    c[section][leaf] = config_lib.get_config()[section][leaf]
    with pytest.raises(ConfigError) as from_library:
      if section == "train":
        multi_user.TrainConfig(**{leaf: bad})
      else:
        examples.random_history_corpus((), bad)
    assert str(from_library.value) == str(from_check.value) == (
        f"config.{key}: unknown {bad!r}; expected one of {', '.join(config_lib.CHOICES[key])}")
