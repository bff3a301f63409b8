"""report.md gathers results.md and every analysis, with image links that resolve from the
workdir; results.md links each figure."""

import os
import re

import pytest


def test_report_links_every_figure(analysed):
  _, workdir = analysed
  from oppu_jax import report
  from oppu_jax.analysis import ANALYSES

  path = report.build(workdir)
  with open(path) as f:
    text = f.read()
  images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
  assert images == [f"analysis/{n}.png" for n in ANALYSES]
  for image in images:
    with open(os.path.join(workdir, image), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(workdir, "results.md")) as f:
    results = f.read()
  assert all(f"(analysis/{n}.png)" in results for n in ANALYSES)


def test_empty_workdir_is_one_line_error(tmp_path):
  from oppu_jax import report
  from oppu_jax.errors import WorkdirError

  with pytest.raises(WorkdirError, match="nothing|no results.md"):
    report.build(str(tmp_path))


def test_report_command(analysed):
  """`python -m oppu_jax.report --workdir=W` prints the page's path; no workdir: one line."""
  import subprocess
  import sys

  _, workdir = analysed
  out = subprocess.run([sys.executable, "-m", "oppu_jax.report", f"--workdir={workdir}"],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == os.path.join(workdir, "report.md")
  out = subprocess.run([sys.executable, "-m", "oppu_jax.report", f"--workdir={workdir}/none"],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: ")


def test_unknown_analysis_is_a_config_error():
  from oppu_jax import analysis
  from oppu_jax.errors import ConfigError

  with pytest.raises(ConfigError, match="config.analysis.name: unknown \\['nope'\\]"):
    analysis.names("k_sweep,nope")
