"""Hypernetwork adapters: a user embedding -> that user's PEFT adapter, in one forward pass (the
idea of Profile-to-PEFT, arXiv 2510.16282; the architecture here is our own small one).

Like an adapter, the network is a plain pytree of parameters with pure functions over it, so the
trainer differentiates, optimises and checkpoints it with the tools it uses for adapters. It is
method-agnostic: it generates the pytree the PEFT method's `init` makes (a LoRA's A and B of every
target layer, (IA)³ vectors, prompt embeddings), so a generated adapter is an ordinary adapter of
that method (HF PEFT files included).

  z = (e - mean) / scale        the user embedding, standardised by the training users' spread
  h = tanh(W1 z + b1)           [hidden]
  c = W2 h + b2                 [rank]: the user's mixing weights
  leaf = base + sum_k c_k basis_k   for every leaf of the adapter pytree

Every leaf is a rank-`rank` linear function of h: the low-rank output heads of the hypernetwork
papers (a dense head from `hidden` units to a 7B model's LoRA would hold hidden x millions of
weights; these hold rank x one adapter). `base` starts as the method's fresh adapter, and
`basis` random where the method's initialisation is random and 0 where it is fixed (a LoRA's B):
every generated adapter starts as the identity, as a fresh one does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.errors import ConfigError, DataError

Params = dict  # {"inputs": {"mean", "scale"}, "net": {"w1", "b1", "w2", "b2", "base", "basis"}}


@dataclasses.dataclass(frozen=True)
class Hypernetwork:
  hidden: int = 64
  rank: int = 16

  def __post_init__(self):
    if self.hidden < 1 or self.rank < 1:
      raise ConfigError(f"config.hyper: hidden={self.hidden} and rank={self.rank} must be >= 1")

  def init(self, fresh_adapter: Callable[[jax.Array], Any], embeddings: np.ndarray,
           key: jax.Array) -> Params:
    """Parameters for adapters shaped like `fresh_adapter(key)` (the method's init), inputs
    standardised by `embeddings` [users, E] (the training users'); only "net" is trained."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) < 2:
      raise DataError(f"the hypernetwork needs the embeddings of at least 2 training users; got "
                      f"an array of shape {embeddings.shape}")
    dim = embeddings.shape[1]
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    base = fresh_adapter(k3)
    # The difference of two fresh adapters is random where the init is, exactly 0 where it is
    # fixed; 1/sqrt(rank) keeps sum_k c_k basis_k on the scale of one fresh adapter.
    keys = jax.random.split(k4, self.rank)
    other = jax.random.split(k5, self.rank)
    scale = 1.0 / math.sqrt(2.0 * self.rank)
    basis = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[
        jax.tree.map(lambda a, b: (a - b) * scale, fresh_adapter(keys[i]), fresh_adapter(other[i]))
        for i in range(self.rank)])
    return {
        "inputs": {"mean": jnp.asarray(embeddings.mean(0)),
                   "scale": jnp.asarray(embeddings.std(0) + 1e-6)},
        "net": {
            "w1": jax.random.normal(k1, (dim, self.hidden)) / math.sqrt(dim),
            "b1": jnp.zeros((self.hidden,)),
            "w2": jax.random.normal(k2, (self.hidden, self.rank)) / math.sqrt(self.hidden),
            "b2": jnp.zeros((self.rank,)),
            "base": base,
            "basis": basis,
        },
    }

  def mixing(self, params: Params, embedding: jax.Array) -> jax.Array:
    """The user's mixing weights c [rank] from its embedding [E]."""
    net, inputs = params["net"], params["inputs"]
    z = (embedding - inputs["mean"]) / inputs["scale"]
    return jnp.tanh(z @ net["w1"] + net["b1"]) @ net["w2"] + net["b2"]

  def generate(self, params: Params, embedding: jax.Array) -> Any:
    """One user's adapter from its embedding [E]: a function of that embedding alone."""
    c = self.mixing(params, embedding)
    net = params["net"]
    return jax.tree.map(lambda base, basis: base + jnp.tensordot(c, basis, axes=1),
                        net["base"], net["basis"])

  @classmethod
  def from_config(cls, hyper_config) -> "Hypernetwork":
    return cls(hidden=int(hyper_config.hidden), rank=int(hyper_config.rank))
