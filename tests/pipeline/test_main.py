"""main.py: an OppuError ends in one line; anything else is a bug and keeps its traceback."""

import os
import subprocess
import sys

import pytest

from oppu_jax import config as config_lib
from oppu_jax import main
from oppu_jax.errors import ConfigError
from oppu_jax.pipeline import run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("override, line", [
    ("--config.settings=oppu_k9", "error: config.settings: unknown setting(s) ['oppu_k9']"),
    ("--config.peft.method=adapterx", "error: config.peft.method: unknown 'adapterx'"),
])
@pytest.mark.slow
def test_a_bad_config_value_ends_in_one_line(tmp_path, override, line):
  out = subprocess.run([sys.executable, "-m", "oppu_jax.main", "--config=configs/lamp3.py",
                        f"--workdir={tmp_path}", override], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith(line)
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, line", [
    (["--config=configs/nope.py", "--config.seed=1"],
     "error: --config: configs/nope.py: no such config file"),
    (["--config=configs/nope.py"], "error: --config: configs/nope.py: no such config file"),
    (["--config=configs/lamp3.py:bogus"],
     "error: --config=configs/lamp3.py:bogus: unknown recipe 'bogus'; expected one of embedded,"),
    (["--config=configs/lamp3.py", "--config.model.path=/typo"],
     "error: config.model.path: '/typo' does not exist (an HF model directory or a .gguf file"),
])
@pytest.mark.slow
def test_a_config_file_or_path_that_cannot_work_ends_in_one_line(tmp_path, args, line):
  out = subprocess.run([sys.executable, "-m", "oppu_jax.main", f"--workdir={tmp_path}/w", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith(line), out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "w" / "config.json")  # nothing claimed


def test_only_oppu_errors_are_caught(monkeypatch, tmp_path):
  config = config_lib.for_task("LaMP_3")

  def bad_input(*_, **__):
    raise ConfigError("config.train.epochs: must be positive")

  monkeypatch.setattr(run, "run", bad_input)
  with pytest.raises(SystemExit, match="^error: config.train.epochs: must be positive$"):
    main.run_and_report(config, str(tmp_path))

  def bug(*_, **__):
    raise KeyError("a bug")

  monkeypatch.setattr(run, "run", bug)
  with pytest.raises(KeyError, match="a bug"):
    main.run_and_report(config, str(tmp_path))
