#!/usr/bin/env bash
# Cloud TPU VM (multi-host) launch: run the same command on every host of the slice, e.g.
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all \
#     --command="cd oppu-jax && bash launch/tpu_vm.sh configs/lamp3.py gs://bucket/run"
# jax.distributed.initialize() (config.distributed=True) discovers the hosts from the TPU
# metadata; the mesh then spans every chip: users along `users`, base weights along `model`.
# NOT yet exercised on TPU hardware: the per-step host loop feeds host-local arrays, which is
# right for one host; multi-host needs jax.make_array_from_process_local_data in the trainer.
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pip install -q "jax[tpu]"
.venv/bin/python -m oppu_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --config.distributed=True --config.mesh.users=-1 --config.mesh.model=1 \
  --config.model.param_dtype=bfloat16 "$@"
