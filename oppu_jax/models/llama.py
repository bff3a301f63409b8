"""Llama-family decoder (Llama-2, SmolLM2, ...) as a Flax NNX module.

The model knows nothing of users. It offers two plug points for adapters:
- every projection (q, k, v, o, gate, up, down) goes through `project(name, x, w, adapter_layer,
  rng)`, a function the caller may supply (LoRA adds a low-rank path, (IA)³ scales the k/v outputs
  and the down-projection input); `adapter_layer` is that layer's slice of an arbitrary pytree
  whose leaves carry a leading layer axis;
- the input can be given as embeddings (`embeds=`), so prompt tuning prepends virtual tokens.

The layers are stacked (every layer weight has a leading [layers] axis) and run under `lax.scan`,
so a 30-layer model compiles one layer body; `params['layers']['q'][i]` still addresses layer i.
Weights are stored [d_in, d_out] (Hugging Face stores [out, in]; the loaders transpose), as
`weight_table` lists them. Every matmul goes through `Llama.matmul`, which binds the compute dtype
and the backend policy (`config.backend`, models/backend.py: the XLA:CPU tricks live there).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from oppu_jax.errors import ModelError
from oppu_jax.models import backend
from oppu_jax.models.family import Family, register
from oppu_jax.models.decoder_only import DecoderOnly
from oppu_jax.models.layers import attention, matmul, plain_project, rms_norm, rope
from oppu_jax.models.weights import Weight, WeightTable

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
  # How weights are stored: float32 | bfloat16. bf16 projection weights are for a frozen base
  # (under the "cpu" backend the layer scan reads them as uint16 bits, with no gradient).
  param_dtype: str = "float32"
  compute_dtype: str = "float32"  # matmul inputs: float32 | bfloat16 (accumulation is f32)
  remat: bool = False  # recompute each layer in the backward pass (saves activation memory)
  # The backend policy (models/backend.py): "auto" | "cpu" | "xla", stored resolved.
  backend: str = "auto"

  def __post_init__(self):
    object.__setattr__(self, "backend", backend.resolve(self.backend))

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  def replace(self, **kw) -> "LlamaConfig":
    return dataclasses.replace(self, **kw)

  @property
  def conventions(self) -> DecoderOnly:
    """How text becomes this family's inputs and targets, scored labels and decoding."""
    return DecoderOnly(self)


def tiny_config(**kw) -> LlamaConfig:
  """A small random-init config with GQA, for tests."""
  base = dict(
      vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
      num_kv_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5, tie_embeddings=False,
  )
  base.update(kw)
  return LlamaConfig(**base)


def config_from_hf(hf: dict, source: str = "config.json", tensor_names=None) -> LlamaConfig:
  """An HF config.json (as a dict) -> LlamaConfig; ModelError naming `source`."""
  del tensor_names  # config.json says all
  if hf.get("rope_scaling"):
    raise ModelError(f"{source}: rope_scaling {hf['rope_scaling']!r} is not supported yet")
  try:
    eos = hf.get("eos_token_id", 2)
    eos = eos[0] if isinstance(eos, list) else eos
    pad = hf.get("pad_token_id")
    return LlamaConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim"),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_id=hf.get("bos_token_id"),
        eos_id=eos,
        pad_id=eos if pad is None else pad,
    )
  except KeyError as e:
    raise ModelError(f"{source}: missing key {e.args[0]!r}") from None


def config_from_gguf(meta: dict, shapes: dict[str, tuple[int, ...]], source: str) -> LlamaConfig:
  """GGUF metadata and tensor shapes (name -> GGUF's reversed shape) -> LlamaConfig."""
  try:
    heads = meta["llama.attention.head_count"]
    eos = int(meta.get("tokenizer.ggml.eos_token_id", 2))
    return LlamaConfig(
        vocab_size=int(meta.get("llama.vocab_size") or shapes["token_embd.weight"][1]),
        hidden_size=int(meta["llama.embedding_length"]),
        intermediate_size=int(meta["llama.feed_forward_length"]),
        num_layers=int(meta["llama.block_count"]),
        num_heads=int(heads),
        num_kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
        tie_embeddings="output.weight" not in shapes,
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_id=eos,
        pad_id=int(meta.get("tokenizer.ggml.padding_token_id", eos)),
    )
  except KeyError as e:
    raise ModelError(f"{source}: GGUF metadata lacks {e.args[0]!r}") from None


def gguf_tensor(weight: Weight, w, config: LlamaConfig):
  """A dequantized GGUF tensor (HF layout) with llama.cpp's q/k row order undone: it interleaves
  the rows per rotary pair, HF uses the half-split layout."""
  n_head = {"q": config.num_heads, "k": config.num_kv_heads}.get(weight.projection)
  if n_head is None:
    return w
  d, d_in = w.shape
  return w.reshape(n_head, d // n_head // 2, 2, d_in).swapaxes(1, 2).reshape(d, d_in)


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
    # get_value, not [...]: a frozen base's projection may be a backend.FrozenPair
    return {name: getattr(self, name).get_value() for name in LAYER_WEIGHTS}

  def scan_arrays(self, policy: backend.Policy) -> dict[str, jax.Array]:
    """The per-layer operands of the layer scan (bf16 projections as `backend.frozen_bits` if
    the policy says so)."""
    bits = policy.frozen_bits
    return {name: backend.frozen_bits(w) if bits and name in PROJECTIONS else w
            for name, w in self.arrays().items()}


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

  def matmul(self, x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., d_in] @ w [d_in, d_out] -> f32, in the config's compute dtype and backend policy;
    the one matmul every projection (and every adapter's) goes through."""
    return matmul(x, w, jnp.dtype(self.config.compute_dtype), backend.policy(self.config.backend))

  def weight_table(self) -> WeightTable:
    return weight_table(self.config)

  @property
  def conventions(self) -> DecoderOnly:
    """How text becomes this model's inputs and targets, scored labels and decoding."""
    return self.config.conventions

  def init_cache(self, batch: int, length: int, dtype=None) -> dict[str, jax.Array]:
    """An empty KV cache; dtype None: what attention reads (`backend.cache_dtype`)."""
    return init_cache(self.config, batch, length, dtype or backend.cache_dtype(self.config))

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """[batch, seq] int -> [batch, seq, hidden] f32."""
    return jnp.take(self.embed[...], tokens, axis=0).astype(jnp.float32)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[..., hidden] (after the final norm) -> [..., vocab] f32."""
    with jax.named_scope("vocab_head"):  # names the ops in a profile (pipeline_profile.py)
      if self.config.tie_embeddings:
        return self.matmul(hidden, self.embed[...].T)
      return self.matmul(hidden, self.lm_head[...])

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

    project = project or plain_project(self.matmul)
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
        (self.layers.scan_arrays(backend.policy(cfg.backend)), adapter_layers, layer_rngs,
         jnp.arange(cfg.num_layers)),
    )
    hidden = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
    new_cache = None if cache is None else {"k": cache_k, "v": cache_v}
    if return_hidden:
      return hidden, new_cache
    return self.logits(hidden), new_cache


def init_cache(config: LlamaConfig, batch: int, length: int, dtype=jnp.float32) -> dict:
  shape = (config.num_layers, batch, length, config.num_kv_heads, config.dim_per_head)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


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
  attn = attention(q, k_all, v_all, mask, cd, backend.policy(cfg.backend))
  attn = attn.reshape(b, t, cfg.num_heads * hd)
  x = x + proj("o", attn)

  h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
  ff = jax.nn.silu(proj("gate", h)) * proj("up", h)
  x = x + proj("down", ff)
  return x, cache_k, cache_v


register(Family("llama", Llama, LlamaConfig, ("llama",), ("llama",), config_from_hf,
                config_from_gguf, weight_table, gguf_tensor))
