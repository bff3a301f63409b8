#!/usr/bin/env bash
# One GPU host: all local GPUs on the users axis (adapters and per-user batches split, base
# replicated). For a 7B base that does not fit one GPU, shard it: --config.mesh.model=<gpus>.
#   bash launch/gpu.sh configs/lamp3.py runs/lamp3_gpu --config.model.path=/models/llama-2-7b-hf
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pip install -q "jax[cuda12]"
.venv/bin/python -m oppu_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --config.mesh.users=-1 --config.mesh.model=1 --config.model.param_dtype=bfloat16 "$@"
