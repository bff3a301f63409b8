"""Shared by the scoring and decoding tests: a tiny random model, stacked per-user adapters that
really differ, and a jitted full-recompute `adapted.forward` (the naive reference)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.models import llama, load
from oppu_jax.models import adapted
from oppu_jax.peft.ia3 import IA3
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.prompt_tuning import PromptTuning
from oppu_jax.peft.stack import UserAdapters

N_USERS = 3
METHODS = {"lora": Lora(targets=("q", "v", "down"), rank=4, alpha=8.0), "ia3": IA3(),
           "prompt": PromptTuning(num_virtual_tokens=5), "none": None}


def tiny_model(scale: float = 0.02, **config):
  """Our Llama on the tiny GQA config (`config` overrides), random weights built in numpy (eager
  JAX init compiles op by op); a larger `scale` gives peaked distributions (greedy choices not
  decided by noise)."""
  cfg = llama.tiny_config(**config)
  rng = np.random.default_rng(0)
  tensors = hf_tensor_shapes(llama.weight_table(cfg))
  tensors = {k: (1 + 0.1 * rng.standard_normal(s) if "norm" in k else
                 scale * rng.standard_normal(s)).astype(np.float32) for k, s in tensors.items()}
  return load.from_hf_state_dict(cfg, tensors)


def hf_tensor_shapes(table):
  """{HF tensor name: HF shape}: top-level weights first, then each layer weight per layer."""
  shapes = {}
  for w in sorted(table.weights, key=lambda w: w.stacked):
    shape = w.shape[::-1] if w.hf_transposed else w.shape
    for i in range(w.num_layers) if w.stacked else [None]:
      shapes[w.hf_name(i)] = shape
  return shapes


def stacked_adapters(model, method, seed: int = 0):
  """[N_USERS, ...] adapters for `method`, each user different and far from the identity."""
  if method is None:
    return None
  embed = np.asarray(model.embed[...])
  table = llama.weight_table(model.config)
  users = []
  for u in range(N_USERS):
    one = method.init(table, jax.random.key(seed + u), jnp.asarray(embed))
    rng = np.random.default_rng(100 + u)
    if isinstance(method, Lora):
      one = jax.tree.map(lambda x: np.asarray(x) + 0.3 * rng.standard_normal(x.shape), one)
    elif isinstance(method, IA3):
      one = jax.tree.map(lambda x: np.asarray(x) + 0.5 * rng.standard_normal(x.shape), one)
    else:
      one = jax.tree.map(lambda x: np.asarray(x) * 3 + 0.1 * rng.standard_normal(x.shape), one)
    users.append(jax.tree.map(lambda x: np.asarray(x, np.float32), one))
  return UserAdapters.stack(method, users)


def user_adapter(adapters, user: int):
  return None if adapters is None else jax.tree.map(jnp.asarray, adapters.user(user))


def method_of(adapters):
  return None if adapters is None else adapters.method


def full_logprobs(model, method, adapter, tokens, length: int = 32) -> np.ndarray:
  """log-softmax [len(tokens), vocab] of `adapted.forward` on one unpadded sequence (right-padded
  to `length`, which causal attention ignores, so it compiles once)."""
  t = len(tokens)
  toks = np.zeros((1, length), np.int32)
  toks[0, :t] = tokens
  mask = np.arange(length)[None] < t
  graphdef, state = nnx.split(model)
  logits = _forward(graphdef, state, method, adapter, jnp.asarray(toks),
                    jnp.arange(length)[None], jnp.asarray(mask))
  return np.asarray(jax.nn.log_softmax(logits[0, :t], axis=-1))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _forward(graphdef, state, method, adapter, tokens, positions, mask):
  return adapted.forward(nnx.merge(graphdef, state), method, adapter, tokens, positions, mask)
