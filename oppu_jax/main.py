"""oppu-jax: One PEFT Per User on LaMP.

  python -m oppu_jax.main --config=configs/lamp3.py --workdir=/tmp/oppu_lamp3

Every config field can be overridden on the command line (`--config.peft.rank=16`). Errors in
the input (config, data, model, workdir) end with one line naming what is wrong.
"""

from __future__ import annotations

import logging
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from oppu_jax import logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file (configs/lampN.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes and resumes.")


def main(argv) -> None:
  del argv
  logs.quiet_libraries()
  if _WORKDIR.value is None:
    sys.exit("error: --workdir is required")
  try:
    config = _CONFIG.value
    config.task  # the file loads lazily: fail here, in one line, if it cannot
  except (OSError, AttributeError) as e:
    sys.exit(_config_file_error(e))
  from oppu_jax.errors import OppuError
  from oppu_jax.pipeline import cluster

  try:
    cluster.initialize(config)
  except OppuError as e:
    sys.exit(f"error: {e}")
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(cluster.quiet_other_processes)
  table = run_and_report(config, _WORKDIR.value)
  if cluster.is_main():
    print(table)


def run_and_report(config, workdir: str) -> str:
  """Runs the experiment (then config.analysis.name's analyses); the results table. An OppuError (bad input) exits with its one-line
  message; anything else is a bug and keeps its traceback."""
  from oppu_jax import analysis
  from oppu_jax.errors import OppuError
  from oppu_jax.eval import report
  from oppu_jax.pipeline import run

  try:
    results = run.run(config, workdir, then=analysis.after_run(config))
  except OppuError as e:
    sys.exit(f"error: {e}")
  if not results:  # a split released without golds (LaMP's test): predictions only
    return f"# {config.task}\n\nno test query has a gold: predictions in {workdir}/predictions/"
  return report.markdown_table(config.task, results)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a mistyped config key as one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if "--config" in str(e).split(":")[0]:
      sys.exit(_config_file_error(e))
    sys.exit("error: " + " ".join(str(e).split()))
  except OSError as e:  # an override (--config.x=...) made absl load a config file that fails
    sys.exit(_config_file_error(e))
  except (KeyError, AttributeError) as e:
    reason = str(e.args[0] if e.args else e).replace("\\n", " ")
    reason = " ".join(reason.replace("\\", "").replace("'", "").split())
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    culprit = next((o for o in overrides if reason.split()[0] in o.split(".")), ", ".join(overrides))
    sys.exit(f"error: unknown config key in {culprit}: {reason}")


def _config_file_error(e: Exception) -> str:
  """One line for a --config file that does not load: a missing file names it; an error raised
  inside the file's get_config (e.g. an unknown recipe) keeps its message, not the traceback that
  ml_collections folds into the flag error."""
  text = str(e)
  missing = re.search(r"No such file or directory: '([^']+)'", text)
  if missing:
    return f"error: --config: {missing.group(1)}: no such config file"
  given = next((a for a in sys.argv[1:] if a.startswith("--config=")), "--config")
  if "Traceback" in text:  # its last line is "module.ErrorClass: message"
    last = text.strip().splitlines()[-1]
    return f"error: {given}: {re.sub(r'^[A-Za-z_.]+(Error|Exception): ', '', last.strip())}"
  return f"error: {given}: " + " ".join(text.split())


def entry() -> None:
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  entry()
