"""launch/: the TPU VM and GPU scripts' --dry-run print every command they would run (nothing
runs: no gcloud, sbatch or GPU here); shellcheck, where installed, finds nothing."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry(script: str, *args: str) -> list[str]:
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", script), "--dry-run", *args],
                       capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
  return out.stdout.splitlines()


def test_tpu_vm_dry_run_creates_installs_runs_fetches_deletes():
  lines = _dry("tpu_vm.sh", "--name=oppu", "--zone=us-central2-b", "--type=v4-32", "--spot",
               "--workdir=gs://bucket/lamp3", "--", "--config=configs/lamp3.py")
  assert lines[0].startswith("gcloud compute tpus tpu-vm create oppu --zone=us-central2-b "
                             "--accelerator-type=v4-32 ")
  assert lines[0].rstrip().endswith("--spot")
  ssh = [l for l in lines if " ssh oppu " in l]
  assert len(ssh) == 2 and all("--worker=all" in l for l in ssh)  # install, then the run
  assert "scripts/setup.sh" in ssh[0]
  assert "oppu_jax.main" in ssh[1] and "gs://bucket/lamp3" in ssh[1]
  assert "--config.distributed.enabled=True" in ssh[1] and "--config=configs/lamp3.py" in ssh[1]
  assert any(l.startswith("gcloud storage cp gs://bucket/lamp3/results.md") for l in lines)
  assert lines[-1].startswith("gcloud compute tpus tpu-vm delete oppu")


def test_tpu_vm_queued_resource_and_keep():
  lines = _dry("tpu_vm.sh", "--name=oppu", "--zone=z", "--type=v5litepod-256", "--queued",
               "--keep", "--workdir=gs://b/r", "--", "--config=configs/lamp5.py")
  assert lines[0].startswith("gcloud compute tpus queued-resources create oppu-qr "
                             "--node-id=oppu --zone=z --accelerator-type=v5litepod-256")
  assert not any(" delete " in l for l in lines)


def test_tpu_vm_missing_argument_is_usage():
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "--dry-run",
                        "--name=x"], capture_output=True, text=True)
  assert out.returncode == 2 and out.stderr.startswith("usage:")


def test_gpu_dry_runs():
  local = _dry("gpu.sh", "local", "--gpus=4", "--", "--config=configs/lamp3.py",
               "--workdir=runs/x")
  assert local[-1].startswith("env CUDA_VISIBLE_DEVICES=0\\,1\\,2\\,3 .venv/bin/python -m "
                              "oppu_jax.main --config.mesh.users=-1 --config=configs/lamp3.py")
  slurm = _dry("gpu.sh", "slurm", "--nodes=2", "--partition=gpu", "--",
               "--config=configs/lamp3.py", "--workdir=/shared/x")
  assert "#SBATCH --nodes=2" in slurm and "#SBATCH --partition=gpu" in slurm
  srun = next(l for l in slurm if l.startswith("srun "))
  assert "--config.distributed.enabled=True" in srun and "--workdir=/shared/x" in srun


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
  scripts = [os.path.join(ROOT, p) for p in ("launch/tpu_vm.sh", "launch/gpu.sh",
                                             "scripts/setup.sh", ".ci/run")]
  out = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
  assert out.returncode == 0, out.stdout
