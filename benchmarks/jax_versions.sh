#!/usr/bin/env bash
# benchmarks/step_bench.py under each jax/jaxlib minor release pyproject's range allows (the
# newest patch of each on PyPI here), each with the newest flax that accepts it; the rest of the
# environment is .venv's. The versions go in $JV_DIR/<jax>/ (default /tmp/jv), put first on
# PYTHONPATH. Run on a quiet machine: the versions run one after the other.
#   bash benchmarks/jax_versions.sh            # every pair below
#   bash benchmarks/jax_versions.sh 0.8.3:0.12.6
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${JV_DIR:-/tmp/jv}
pairs=("$@")
[ ${#pairs[@]} -gt 0 ] || pairs=(0.6.2:0.11.2 0.7.2:0.12.0 0.8.3:0.12.6 0.9.2:0.12.6 0.10.2:0.12.8)
for pair in "${pairs[@]}"; do
  jax=${pair%%:*}; flax=${pair##*:}
  if [ ! -d "$dir/$jax" ]; then
    .venv/bin/python -m pip install -q --no-deps --target "$dir/$jax" "jax==$jax" "jaxlib==$jax" \
      "flax==$flax" 2>&1 | grep -v "^WARNING: Location" || true
  fi
  out=$(PYTHONPATH="$dir/$jax" .venv/bin/python benchmarks/step_bench.py 2>&1) || true
  echo "$out" | grep "^jax " || echo "jax $jax flax $flax | failed: $(echo "$out" | tail -1)"
done
