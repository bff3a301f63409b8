"""Llama-family decoder (Llama-2, SmolLM2, ...) as a Flax NNX module.

The model knows nothing of users. It offers two plug points for adapters:
- every projection (q, k, v, o, gate, up, down) goes through `project(name, x, w, adapter_layer,
  rng)`, a function the caller may supply (LoRA adds a low-rank path, (IA)³ scales the k/v outputs
  and the down-projection input); `adapter_layer` is that layer's slice of an arbitrary pytree
  whose leaves carry a leading layer axis;
- the input can be given as embeddings (`embeds=`), so prompt tuning prepends virtual tokens.

The layers are stacked (every layer weight has a leading [layers] axis) and run under `lax.scan`,
so a 30-layer model compiles one layer body; `params['layers']['q'][i]` still addresses layer i.
Weights are stored [d_in, d_out] (Hugging Face stores [out, in]; the loaders transpose).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from oppu_jax.models.weights import Weight, WeightTable
from oppu_jax.models.layers import (
    attention, frozen_bits, frozen_bits_view, matmul, rms_norm, rope,
)

PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
LAYER_WEIGHTS = ("attn_norm", "q", "k", "v", "o", "mlp_norm", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int | None = None  # default hidden_size // num_heads
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  bos_id: int | None = 1
  eos_id: int = 2
  pad_id: int = 0
  # How weights are stored: float32 | bfloat16. bf16 projection weights are frozen: the layer
  # scan reads them as uint16 bits (layers.frozen_bits) and they get no gradient.
  param_dtype: str = "float32"
  compute_dtype: str = "float32"  # matmul inputs: float32 | bfloat16 (accumulation is f32)
  remat: bool = False  # recompute each layer in the backward pass (saves activation memory)

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  def replace(self, **kw) -> "LlamaConfig":
    return dataclasses.replace(self, **kw)


def tiny_config(**kw) -> LlamaConfig:
  """A small random-init config with GQA, for tests."""
  base = dict(
      vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
      num_kv_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5, tie_embeddings=False,
  )
  base.update(kw)
  return LlamaConfig(**base)


class ProjectFn(Protocol):
  def __call__(
      self, name: str, x: jax.Array, w: jax.Array, adapter_layer: Any, rng: jax.Array | None
  ) -> jax.Array: ...


def layer_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """Shapes of one decoder layer's weights, [d_in, d_out] for projections."""
  d, f, hd = config.hidden_size, config.intermediate_size, config.dim_per_head
  return {
      "attn_norm": (d,),
      "q": (d, config.num_heads * hd),
      "k": (d, config.num_kv_heads * hd),
      "v": (d, config.num_kv_heads * hd),
      "o": (config.num_heads * hd, d),
      "mlp_norm": (d,),
      "gate": (d, f),
      "up": (d, f),
      "down": (f, d),
  }


def weight_table(config: LlamaConfig) -> WeightTable:
  """Every Llama weight: HF / GGUF names, our shape [d_in, d_out], logical axes, adaptability."""
  n = config.num_layers
  shapes = layer_shapes(config)
  layer_axes = {
      "attn_norm": ("embed",), "q": ("embed", "heads"), "k": ("embed", "kv_heads"),
      "v": ("embed", "kv_heads"), "o": ("heads", "embed"), "mlp_norm": ("embed",),
      "gate": ("embed", "mlp"), "up": ("embed", "mlp"), "down": ("mlp", "embed"),
  }
  names = {  # ours -> (HF suffix after "model.layers.{i}.", GGUF suffix after "blk.{i}.")
      "attn_norm": ("input_layernorm", "attn_norm"), "q": ("self_attn.q_proj", "attn_q"),
      "k": ("self_attn.k_proj", "attn_k"), "v": ("self_attn.v_proj", "attn_v"),
      "o": ("self_attn.o_proj", "attn_output"),
      "mlp_norm": ("post_attention_layernorm", "ffn_norm"), "gate": ("mlp.gate_proj", "ffn_gate"),
      "up": ("mlp.up_proj", "ffn_up"), "down": ("mlp.down_proj", "ffn_down"),
  }
  d, v = config.hidden_size, config.vocab_size
  weights = [Weight(("embed",), "model.embed_tokens.weight", "token_embd.weight", (v, d),
                    ("vocab", "embed"))]
  for name in LAYER_WEIGHTS:
    hf, gguf = names[name]
    weights.append(Weight(
        ("layers", name), f"model.layers.{{i}}.{hf}.weight", f"blk.{{i}}.{gguf}.weight",
        shapes[name], layer_axes[name], hf_transposed=name in PROJECTIONS,
        projection=name if name in PROJECTIONS else None, num_layers=n))
  weights.append(Weight(("final_norm",), "model.norm.weight", "output_norm.weight", (d,),
                        ("embed",)))
  if not config.tie_embeddings:
    weights.append(Weight(("lm_head",), "lm_head.weight", "output.weight", (d, v),
                          ("embed", "vocab"), hf_transposed=True))
  return WeightTable(tuple(weights))


class DecoderLayers(nnx.Module):
  """All decoder layers' weights, stacked along a leading [layers] axis."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(config.param_dtype)
    for name, shape in layer_shapes(config).items():
      shape = (config.num_layers, *shape)
      if name.endswith("norm"):
        value = jnp.ones(shape, dtype)
      else:
        value = (0.02 * jax.random.normal(rngs.params(), shape)).astype(dtype)
      setattr(self, name, nnx.Param(value))

  def arrays(self) -> dict[str, jax.Array]:
    return {name: getattr(self, name)[...] for name in LAYER_WEIGHTS}

  def scan_arrays(self) -> dict[str, jax.Array]:
    """The per-layer operands of the layer scan: bf16 projections as `frozen_bits`."""
    return {
        name: frozen_bits(w) if name in PROJECTIONS else w for name, w in self.arrays().items()
    }


class Llama(nnx.Module):
  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.param_dtype)
    d = config.hidden_size
    self.embed = nnx.Param(
        (0.02 * jax.random.normal(rngs.params(), (config.vocab_size, d))).astype(dtype)
    )
    self.layers = DecoderLayers(config, rngs=rngs)
    self.final_norm = nnx.Param(jnp.ones((d,), dtype))
    if not config.tie_embeddings:
      self.lm_head = nnx.Param(
          (0.02 * jax.random.normal(rngs.params(), (d, config.vocab_size))).astype(dtype)
      )

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """[batch, seq] int -> [batch, seq, hidden] f32."""
    return jnp.take(self.embed[...], tokens, axis=0).astype(jnp.float32)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[..., hidden] (after the final norm) -> [..., vocab] f32."""
    cd = jnp.dtype(self.config.compute_dtype)
    if self.config.tie_embeddings:
      return matmul(hidden, self.embed[...].T, cd)
    return matmul(hidden, self.lm_head[...], cd)

  def __call__(
      self,
      tokens: jax.Array | None = None,
      *,
      positions: jax.Array,
      attention_mask: jax.Array,
      embeds: jax.Array | None = None,
      cache: dict[str, jax.Array] | None = None,
      cache_index: jax.Array | int = 0,
      adapter_layers: Any = None,
      project: ProjectFn | None = None,
      rng: jax.Array | None = None,
      return_hidden: bool = False,
  ) -> tuple[jax.Array, dict[str, jax.Array] | None]:
    """Runs the decoder.

    tokens: [batch, seq] int (or `embeds` [batch, seq, hidden]); positions: [batch, seq] int.
    attention_mask: [batch, seq] bool without a cache; with a cache, [batch, cache_len] over the
      cache slots (True = a real token); or a full [batch, seq, seq or cache_len] bool mask, used
      as given (no causal mask added).
    cache: {'k','v': [layers, batch, cache_len, kv_heads, head_dim]}; the new keys/values are
      written at slots cache_index .. cache_index+seq-1.
    Returns (logits [batch, seq, vocab] f32, or the final-normed hidden states with
    return_hidden=True; the updated cache or None).
    """
    cfg = self.config
    x = self.embed_tokens(tokens) if embeds is None else embeds.astype(jnp.float32)
    seq = x.shape[1]
    if attention_mask.ndim == 3:
      # A full [batch, query, key] mask from the caller, who owns causality (e.g. scoring many
      # continuations of one prompt in one sequence, each attending to the prompt and itself).
      mask = attention_mask.astype(bool)
    elif cache is None:
      causal = jnp.tril(jnp.ones((seq, seq), bool))
      mask = causal[None] & attention_mask[:, None, :].astype(bool)
    else:
      slots = jnp.arange(cache["k"].shape[2])
      query_slots = cache_index + jnp.arange(seq)
      causal = slots[None, :] <= query_slots[:, None]
      mask = causal[None] & attention_mask[:, None, :].astype(bool)

    project = project or _plain_project(jnp.dtype(cfg.compute_dtype))
    layer_rngs = None if rng is None else jax.random.split(rng, cfg.num_layers)

    # The cache rides in the scan carry and each layer writes only its new keys/values into it
    # (dynamic_update_slice on a carried buffer is in place). Passing it as xs/ys instead made
    # XLA copy the whole cache every decode step: 2x slower steps (SmolLM2, batch 16, 320 slots).
    def body(carry, per_layer):
      x, cache_k, cache_v = carry
      params, adapter_layer, layer_rng, layer = per_layer
      x, cache_k, cache_v = _decoder_layer(
          cfg, params, adapter_layer, layer_rng, x, positions, mask, project,
          cache_k, cache_v, layer, cache_index,
      )
      return (x, cache_k, cache_v), None

    if cfg.remat:
      body = jax.checkpoint(body)
    cache_k = None if cache is None else cache["k"]
    cache_v = None if cache is None else cache["v"]
    (x, cache_k, cache_v), _ = jax.lax.scan(
        body, (x, cache_k, cache_v),
        (self.layers.scan_arrays(), adapter_layers, layer_rngs, jnp.arange(cfg.num_layers)),
    )
    hidden = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
    new_cache = None if cache is None else {"k": cache_k, "v": cache_v}
    if return_hidden:
      return hidden, new_cache
    return self.logits(hidden), new_cache


def init_cache(config: LlamaConfig, batch: int, length: int, dtype=jnp.float32) -> dict:
  shape = (config.num_layers, batch, length, config.num_kv_heads, config.dim_per_head)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def _plain_project(compute_dtype) -> ProjectFn:
  def project(name, x, w, adapter_layer, rng):
    del name, adapter_layer, rng
    return matmul(x, w, compute_dtype)

  return project


def _decoder_layer(cfg, p, adapter_layer, rng, x, positions, mask, project, cache_k, cache_v,
                   layer, cache_index):
  """One layer. cache_k/v: the whole cache [layers, batch, cache_len, kv_heads, head_dim] or
  None; this layer's new keys/values are written at (layer, :, cache_index)."""
  b, t, _ = x.shape
  hd = cfg.dim_per_head
  cd = jnp.dtype(cfg.compute_dtype)
  rngs = {}
  if rng is not None:
    for i, name in enumerate(PROJECTIONS):
      rngs[name] = jax.random.fold_in(rng, i)

  def proj(name, inp):
    return project(name, inp, p[name], adapter_layer, rngs.get(name))

  h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
  q = proj("q", h).reshape(b, t, cfg.num_heads, hd)
  k = proj("k", h).reshape(b, t, cfg.num_kv_heads, hd)
  v = proj("v", h).reshape(b, t, cfg.num_kv_heads, hd)
  q = rope(q, positions, cfg.rope_theta)
  k = rope(k, positions, cfg.rope_theta)
  if cache_k is not None:
    at = (layer, 0, cache_index, 0, 0)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k[None].astype(cache_k.dtype), at)
    cache_v = jax.lax.dynamic_update_slice(cache_v, v[None].astype(cache_v.dtype), at)
    k_all = jax.lax.dynamic_index_in_dim(cache_k, layer, 0, keepdims=False)
    v_all = jax.lax.dynamic_index_in_dim(cache_v, layer, 0, keepdims=False)
  else:
    k_all, v_all = k, v
  attn = attention(q, k_all, v_all, mask, cd).reshape(b, t, cfg.num_heads * hd)
  x = x + proj("o", attn)

  h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
  ff = jax.nn.silu(proj("gate", h)) * proj("up", h)
  x = x + proj("down", ff)
  return x, cache_k, cache_v


def apply(graphdef: nnx.GraphDef, state: nnx.State, *args, **kwargs):
  """Pure form of `Llama.__call__` over split state, for jit/vmap with the base broadcast."""
  return nnx.merge(graphdef, state)(*args, **kwargs)


def with_frozen_bits(state: nnx.State) -> nnx.State:
  """The model state with its bf16 projection stacks as uint16 views (`frozen_bits_view`).

  For a training step that never differentiates the base: the layer scan then slices integer
  stacks and XLA:CPU neither converts nor copies them. The model reads such state unchanged.
  """
  def convert(path, leaf):
    names = [getattr(k, "key", None) for k in path]
    if len(names) >= 2 and names[0] == "layers" and names[1] in PROJECTIONS:
      return frozen_bits_view(leaf)
    return leaf

  return jax.tree_util.tree_map_with_path(convert, state)


def abstract_model(config: LlamaConfig) -> Llama:
  """The model with shapes only (no memory), for loaders to fill."""
  return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
