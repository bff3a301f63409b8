"""One page from whatever a workdir holds: results.md, then each analysis's table and figure.

  python -m oppu_jax.report --workdir=/tmp/oppu_lamp3

Writes W/report.md (its images are the analysis/*.png files beside it, linked relatively, so the
page renders wherever the workdir is copied) and prints its path.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags


def build(workdir: str) -> str:
  """Writes workdir/report.md; returns its path. A workdir with nothing to report is an error."""
  from oppu_jax import files
  from oppu_jax.analysis import ANALYSES
  from oppu_jax.errors import WorkdirError

  parts = []
  results = os.path.join(workdir, "results.md")
  if os.path.exists(results):
    with open(results) as f:
      parts.append(f.read().strip())
  for name in ANALYSES:
    md = os.path.join(workdir, "analysis", f"{name}.md")
    if os.path.exists(md):
      with open(md) as f:
        # An analysis's links are relative to analysis/; the report sits one level up.
        parts.append(f.read().strip().replace(f"]({name}.png)", f"](analysis/{name}.png)"))
  if not parts:
    raise WorkdirError(f"{workdir}: no results.md and no analysis/*.md to report (run "
                       "python -m oppu_jax.main there first)")
  path = os.path.join(workdir, "report.md")
  files.write_text(path, "\n\n---\n\n".join(p.replace("\n# ", "\n## ") for p in parts) + "\n")
  return path


def main(argv) -> None:
  del argv
  from oppu_jax.errors import OppuError

  workdir = flags.FLAGS.workdir
  if not workdir:
    sys.exit("error: --workdir is required")
  try:
    print(build(workdir))
  except OppuError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  # Defined here, not at import: oppu_jax.main defines its own --workdir in the same registry.
  flags.DEFINE_string("workdir", None, "A run's workdir.")
  app.run(main)
