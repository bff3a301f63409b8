#!/usr/bin/env bash
# Runs oppu_jax.main on GPUs: `local` on one node (one process sees all its GPUs; the mesh spans
# them), or `slurm` on several nodes (sbatch: one process per node, jax.distributed finds its
# peers from SLURM's variables). --dry-run prints every command (and the batch script) instead.
#
#   launch/gpu.sh --dry-run local --gpus=8 -- --config=configs/lamp3.py --workdir=runs/lamp3
#   launch/gpu.sh --dry-run slurm --nodes=4 --gpus-per-node=8 --partition=gpu --time=04:00:00 \
#     -- --config=configs/lamp3.py --workdir=/shared/runs/lamp3
#
# NOT yet run on GPUs: the multi-process pipeline is proven with local CPU processes only
# (tests/pipeline/test_multiprocess.py).
set -euo pipefail

usage() {
  echo "usage: $0 [--dry-run] local [--gpus=N] -- MAIN_ARGS..." >&2
  echo "       $0 [--dry-run] slurm --nodes=N [--gpus-per-node=G] [--partition=P]" \
       "[--time=HH:MM:SS] -- MAIN_ARGS..." >&2
  exit 2
}

DRY_RUN=0
if [ "${1:-}" = --dry-run ]; then DRY_RUN=1; shift; fi
MODE=${1:-}; [ -n "$MODE" ] || usage; shift
GPUS="" NODES="" PER_NODE=8 PARTITION="" TIME="04:00:00"
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus=*) GPUS=${1#*=} ;;
    --nodes=*) NODES=${1#*=} ;;
    --gpus-per-node=*) PER_NODE=${1#*=} ;;
    --partition=*) PARTITION=${1#*=} ;;
    --time=*) TIME=${1#*=} ;;
    --) shift; break ;;
    *) echo "$0: unknown argument $1" >&2; usage ;;
  esac
  shift
done
MAIN_ARGS=("$@")
cd "$(dirname "$0")/.."

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

case "$MODE" in
  local)
    VISIBLE=()
    [ -n "$GPUS" ] && VISIBLE=(env "CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((GPUS - 1)))")
    run bash scripts/setup.sh
    run .venv/bin/python -m pip install -q "jax[cuda12]"
    run "${VISIBLE[@]}" .venv/bin/python -m oppu_jax.main --config.mesh.users=-1 "${MAIN_ARGS[@]}"
    ;;
  slurm)
    [ -n "$NODES" ] || usage
    ARGS=$(printf '%q ' "${MAIN_ARGS[@]}")
    SCRIPT=$(cat <<SBATCH
#!/usr/bin/env bash
#SBATCH --job-name=oppu-jax
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$PER_NODE
#SBATCH --time=$TIME
${PARTITION:+#SBATCH --partition=$PARTITION}
set -euo pipefail
cd $(printf '%q' "$PWD")
srun .venv/bin/python -m oppu_jax.main --config.distributed.enabled=True --config.mesh.users=-1 $ARGS
SBATCH
)
    run bash scripts/setup.sh
    run .venv/bin/python -m pip install -q "jax[cuda12]"
    if [ "$DRY_RUN" = 1 ]; then
      echo "sbatch <<'EOF'"; echo "$SCRIPT"; echo "EOF"
    else
      echo "$SCRIPT" | sbatch
    fi
    ;;
  *) usage ;;
esac
