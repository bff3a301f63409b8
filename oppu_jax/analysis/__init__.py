"""The papers' analyses as commands: `--config.analysis.name=<name>` (or "all") on a task config
runs what the analysis needs that the workdir does not hold yet — no adapter is trained twice —
and writes analysis/<name>.md (the table), .png (the figure) and .json (the numbers).
`python -m oppu_jax.report --workdir=W` gathers them into report.md."""

from __future__ import annotations

import importlib
import logging
import sys

from oppu_jax.errors import ConfigError

# Each is the module oppu_jax/analysis/<name>.py; this is the order of the report.
ANALYSES = (
    "behaviour_shift",  # OPPU §5, Table 2
    "activity",  # OPPU Fig. 3
    "k_sweep",  # OPPU Fig. 4
    "history_format",  # OPPU Table 3
    "peft_methods",  # OPPU Fig. 6
    "similarity",  # OPPU Appendix G, Fig. 9
    "efficiency",  # OPPU Appendix C, Fig. 8
    "profile_gain",  # the PEFT-vs-RAG study: gain against profile size
)


def names(spec: str) -> list[str]:
  """'k_sweep,similarity' or 'all' -> analysis names, checked."""
  chosen = list(ANALYSES) if spec.strip() == "all" else [
      n.strip() for n in spec.split(",") if n.strip()]
  unknown = [n for n in chosen if n not in ANALYSES]
  if unknown:
    raise ConfigError(f"config.analysis.name: unknown {unknown}; choose from "
                      f"{', '.join(ANALYSES)}, or 'all'")
  return chosen


def after_run(config):
  """What `pipeline.run.run(..., then=)` calls after the stages: config.analysis.name's
  analyses on the experiment (None when it names none)."""
  if not config.analysis.name:
    return None
  names(config.analysis.name)  # an unknown name fails before any training
  return lambda exp: run(exp, config.analysis.name)


def run(exp, spec: str) -> list[str]:
  """Runs the analyses of `spec` on the experiment; returns the .md paths written."""
  written = []
  for name in names(spec):
    module = importlib.import_module(f"oppu_jax.analysis.{name}")
    logging.info("analysis %s", name)
    written.append(module.run(exp, command(exp, name)))
    logging.info("analysis %s: %s", name, written[-1])
  return written


def command(exp, name: str) -> str:
  """The command line that made an analysis (as typed, when run from oppu_jax.main)."""
  args = [a for a in sys.argv[1:] if not a.startswith("--config.analysis.name")]
  if sys.argv and sys.argv[0].endswith("oppu_jax/main.py"):
    return " ".join(["python -m oppu_jax.main", *args, f"--config.analysis.name={name}"])
  c = exp.config
  return (f"task {c.task}, recipe {c.recipe}, workdir {exp.workdir}, "
          f"--config.analysis.name={name}")
