"""The CI check of compile_check: the tiny model's training and scoring programs compiled for a
TPU v5e 2x2 slice by libtpu on this CPU, and for 8 H100s by the CUDA plugin. Each is skipped,
saying so, where its compiler is not installed (scripts/setup.sh installs both apart, in
<venv>/tpu and <venv>/cuda)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

GiB = 1 << 30
_HAS_LIBTPU = (importlib.util.find_spec("libtpu") is not None
               or os.path.isdir(os.path.join(sys.prefix, "tpu", "libtpu")))
pytestmark = pytest.mark.slow
needs_libtpu = pytest.mark.skipif(not _HAS_LIBTPU, reason="libtpu is not installed: run "
                                  "scripts/setup.sh or pip install -e '.[tpu]' to compile for TPUs")


def _check(tmp_path, *flags) -> dict:
  out = tmp_path / "check.json"
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  topology = [] if any(f.startswith("--topology") for f in flags) else ["--topology=v5e-4"]
  run = subprocess.run(
      [sys.executable, "-m", "oppu_jax.compile_check", "--model=tiny-llama", *topology,
       f"--json={out}", *flags], env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  (result,) = json.loads(out.read_text())
  return result


@needs_libtpu
def test_training_and_scoring_compile_for_a_v5e_slice_and_fit(tmp_path):
  r = _check(tmp_path, "--mesh=2x2", "--slots=4",
             "--programs=task_adaptation,users_step[lora],score")
  assert (r["devices"], r["mesh"], r["hbm_bytes"]) == (4, [2, 2], 16 * GiB)
  rows = {p["program"]: p for p in r["programs"]}
  assert set(rows) == {"task_adaptation", "users_step[lora]", "score"}
  for p in rows.values():
    assert 0 < p["bytes_per_device"] < 16 * GiB and p["fits"], p
    assert p["flops"] > 0
    # The base is split over the model axis: its row-parallel projections reduce partial sums.
    assert "all-reduce" in p["collectives"], p
  # Task adaptation's rows are split over the users axis too: gradients are reduced.
  assert rows["task_adaptation"]["collectives"]["all-reduce"][0] > (
      rows["score"]["collectives"]["all-reduce"][0])


@needs_libtpu
def test_users_on_the_users_axis_never_communicate(tmp_path):
  """With the base whole on every device, a multi-user step is one user per device: no
  collective at all (a user's gradients never meet another's)."""
  r = _check(tmp_path, "--mesh=4x1", "--slots=4", "--programs=users_step[lora],users_step[ia3]")
  for p in r["programs"]:
    assert p["collectives"] == {}, p
    assert p["fits"]


_HAS_CUDA_PLUGIN = (importlib.util.find_spec("jax_cuda12_plugin") is not None
                    or os.path.isdir(os.path.join(sys.prefix, "cuda", "jax_plugins")))


@pytest.mark.skipif(not _HAS_CUDA_PLUGIN, reason="the CUDA plugin is not installed: run "
                    "scripts/setup.sh or pip install -e '.[gpu-check]' to compile for GPUs")
def test_eight_h100s_compile_without_a_gpu(tmp_path):
  r = _check(tmp_path, "--topology=8xH100", "--mesh=4x2", "--slots=8",
             "--programs=users_step[lora],score")
  assert (r["target"], r["devices"], r["mesh"]) == ("8xH100", 8, [4, 2])
  for p in r["programs"]:
    assert 0 < p["bytes_per_device"] < 80 * GiB and p["fits"], p
    assert "all-reduce" in p["collectives"], p
