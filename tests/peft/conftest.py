"""Fixtures for the PEFT tests: a tiny random model built from numpy (eager JAX init compiles op by
op, seconds on 2 cores) and a jitted adapted.forward."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from oppu_jax.models import llama, load
from oppu_jax.models import adapted


@pytest.fixture(scope="session")
def tiny():
  """(config, our Llama) on the tiny GQA config, random weights and random norm weights."""
  cfg = llama.tiny_config()
  rng = np.random.default_rng(0)
  tensors = {}
  for w in sorted(llama.weight_table(cfg).weights, key=lambda w: w.stacked):
    shape = w.shape[::-1] if w.hf_transposed else w.shape  # HF: [out, in]
    for i in range(w.num_layers) if w.stacked else [None]:
      tensors[w.hf_name(i)] = shape
  tensors = {k: (1 + 0.1 * rng.standard_normal(s) if "norm" in k else
                 0.02 * rng.standard_normal(s)).astype(np.float32) for k, s in tensors.items()}
  return cfg, load.from_hf_state_dict(cfg, tensors)


@pytest.fixture(scope="session")
def table(tiny):
  return llama.weight_table(tiny[0])


@pytest.fixture(scope="session")
def forward():
  """adapted.forward, jitted (the method object is static; one compile per method)."""
  return _forward


def _forward(model, method, adapter, tokens, positions, attention_mask):
  graphdef, state = nnx.split(model)
  return _jitted(graphdef, state, method, adapter, tokens, positions, attention_mask)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _jitted(graphdef, state, method, adapter, tokens, positions, attention_mask):
  return adapted.forward(nnx.merge(graphdef, state), method, adapter, tokens, positions,
                       attention_mask)
