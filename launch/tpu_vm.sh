#!/usr/bin/env bash
# Runs oppu_jax.main on a Cloud TPU VM or pod slice: create it (optionally spot, optionally as a
# queued resource), copy and install this checkout on every worker, run the same command on all
# workers (jax.distributed finds the hosts from the TPU metadata), copy the results home, and,
# if the slice was preempted, recreate it and run the same command again: the gs:// workdir
# resumes where the last run stopped. --dry-run prints every command instead of running it.
#
#   launch/tpu_vm.sh --dry-run --name=oppu --zone=us-central2-b --type=v4-32 --spot \
#     --workdir=gs://my-bucket/lamp3 -- --config=configs/lamp3.py --config.mesh.model=4
#
# NOT yet run on TPU hardware: the multi-process pipeline is proven with local CPU processes only
# (tests/pipeline/test_multiprocess.py), the gs:// workdir through file:// (tests/test_storage.py).
set -euo pipefail

usage() {
  echo "usage: $0 [--dry-run] --name=NAME --zone=ZONE --type=ACCELERATOR --workdir=gs://... \\" >&2
  echo "       [--version=RUNTIME] [--spot] [--queued] [--retries=N] [--keep] -- MAIN_ARGS..." >&2
  exit 2
}

DRY_RUN=0 NAME="" ZONE="" TYPE="" WORKDIR="" VERSION="tpu-ubuntu2204-base" SPOT=0 QUEUED=0
RETRIES=3 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name=*) NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --type=*) TYPE=${1#*=} ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --retries=*) RETRIES=${1#*=} ;;
    --keep) KEEP=1 ;;
    --) shift; break ;;
    *) echo "$0: unknown argument $1" >&2; usage ;;
  esac
  shift
done
if [ -z "$NAME" ] || [ -z "$ZONE" ] || [ -z "$TYPE" ] || [ -z "$WORKDIR" ]; then usage; fi
MAIN_ARGS=("$@")

# Runs a command, or prints it (shell-quoted, one per line) under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

SPOT_FLAG=()
[ "$SPOT" = 1 ] && SPOT_FLAG=(--spot)

create() {
  if [ "$QUEUED" = 1 ]; then
    run gcloud compute tpus queued-resources create "$NAME-qr" --node-id="$NAME" --zone="$ZONE" \
      --accelerator-type="$TYPE" --runtime-version="$VERSION" "${SPOT_FLAG[@]}"
    # A queued resource is granted when capacity frees up: wait until the node is ACTIVE.
    if [ "$DRY_RUN" = 1 ]; then
      run gcloud compute tpus queued-resources describe "$NAME-qr" --zone="$ZONE" \
        --format="value(state.state)"
    else
      until [ "$(gcloud compute tpus queued-resources describe "$NAME-qr" --zone="$ZONE" \
                 --format='value(state.state)')" = ACTIVE ]; do sleep 60; done
    fi
  else
    run gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
      --version="$VERSION" "${SPOT_FLAG[@]}"
  fi
}

delete() {
  if [ "$QUEUED" = 1 ]; then
    run gcloud compute tpus queued-resources delete "$NAME-qr" --zone="$ZONE" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
  fi
}

on_all() {
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"
}

install() {
  cd "$(dirname "$0")/.."
  run gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all \
    pyproject.toml README.md oppu_jax configs scripts "$NAME:~/oppu-jax/"
  on_all "cd ~/oppu-jax && bash scripts/setup.sh && .venv/bin/python -m pip install -q 'jax[tpu]' -e '.[gcs]'"
}

main_command() {
  local args
  args=$(printf '%q ' "${MAIN_ARGS[@]}")
  echo "cd ~/oppu-jax && .venv/bin/python -m oppu_jax.main --workdir=$WORKDIR" \
    "--config.distributed.enabled=True $args"
}

preempted() {
  local state
  state=$(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" --format='value(state)' \
          2>/dev/null || echo GONE)
  [ "$state" = PREEMPTED ] || [ "$state" = GONE ] || [ "$state" = TERMINATED ]
}

create
install
attempt=1
until on_all "$(main_command)"; do
  if [ "$DRY_RUN" = 1 ] || [ "$attempt" -ge "$RETRIES" ] || ! preempted; then
    echo "$0: the run failed (attempt $attempt); the slice is kept for inspection" >&2
    exit 1
  fi
  echo "$0: preempted; recreating $NAME and running the same command (attempt $((attempt + 1)))" >&2
  delete
  create
  install
  attempt=$((attempt + 1))
done
run mkdir -p "runs/$NAME"
run gcloud storage cp "$WORKDIR/results.md" "$WORKDIR/results.json" "$WORKDIR/significance.json" \
  "runs/$NAME/"
[ "$KEEP" = 1 ] || delete
