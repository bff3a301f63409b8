"""T5 v1.1 / FlanT5 (and original T5) encoder-decoder as a Flax NNX module.

The same conventions as `llama.py`: weights stored [d_in, d_out], each stack's layers stacked on a
leading [layers] axis and run under `lax.scan`, every projection through the caller's
`project(name, x, w, adapter_layer, rng)` hook, every matmul through `T5.matmul` (compute dtype
and backend policy bound), and a `weight_table` naming every tensor once. The config, HF name
tables and weight table are in `t5_config.py`; here are the modules and the layer functions.

What is T5's own:
- attention is unscaled (T5 folds 1/sqrt(d) into its initialisation) and self-attention adds a
  learned relative position bias: bucketed key - query offsets (bidirectional in the encoder,
  only the past in the decoder), one [buckets, heads] table per stack, stored in HF in layer 0
  and shared by all layers of the stack; cross-attention has none;
- layer norm is RMS-style (no mean, no bias), pre-norm, with a final norm per stack;
- feed-forward "gated-gelu" (v1.1, FlanT5: gelu_tanh(x W_gate) * x W_up, then W_down) or "relu"
  (original T5: relu(x W_up) W_down; also "gated-relu", "gelu");
- the LM head: a separate `lm_head.weight` when the checkpoint has one (FlanT5 as saved by
  transformers 4), else the shared embedding; the decoder output is multiplied by d_model**-0.5
  first when the config says so (original T5; transformers 5 calls it `scale_decoder_outputs`).

Adapter names (the weight table's projections): "enc.q/k/v/o", "dec.q/k/v/o" (decoder
self-attention), "cross.q/k/v/o" (cross-attention), "enc.gate/up/down", "dec.gate/up/down"
(HF wi_0 / wi_1 or wi / wo). `WeightTable.check_projections` expands a bare "q" to all three
attentions, as HF PEFT's `target_modules=["q"]` does. `adapter_layers` is a dict keyed by
projection name; each stack's scan takes the keys of its own projections ("enc.*"; "dec.*" and
"cross.*").
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from oppu_jax.models import backend
from oppu_jax.models.family import Family, register
from oppu_jax.models.encoder_decoder import EncoderDecoder, encoder_states
from oppu_jax.models.layers import attention, matmul, plain_project, rms_norm
from oppu_jax.models.t5_config import (T5Config, projection_name, config_from_gguf,
                                       config_from_hf, stack_shapes, weight_table)
from oppu_jax.models.weights import WeightTable


class Stack(nnx.Module):
  """One stack's (encoder's or decoder's) layer weights stacked on [layers], its relative
  position bias table and its final norm."""

  def __init__(self, config: T5Config, decoder: bool, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(config.param_dtype)
    n = config.num_decoder_layers if decoder else config.num_layers
    self.names = tuple(stack_shapes(config, decoder))
    for name, shape in stack_shapes(config, decoder).items():
      if name.endswith("norm"):
        value = jnp.ones((n, *shape), dtype)
      else:
        value = (0.05 * jax.random.normal(rngs.params(), (n, *shape))).astype(dtype)
      setattr(self, name, nnx.Param(value))
    self.rel_bias = nnx.Param((0.1 * jax.random.normal(
        rngs.params(), (config.relative_attention_num_buckets, config.num_heads))).astype(dtype))
    self.final_norm = nnx.Param(jnp.ones((config.d_model,), dtype))

  def scan_arrays(self, policy: backend.Policy) -> dict[str, jax.Array]:
    """The per-layer operands of the layer scan (bf16 projections as uint16 bits under "cpu")."""
    # get_value, not [...]: a frozen base's projection may be a backend.FrozenPair
    values = {name: getattr(self, name).get_value() for name in self.names}
    return {name: backend.frozen_bits(w) if policy.frozen_bits and not name.endswith("norm") else w
            for name, w in values.items()}


class T5(nnx.Module):
  def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.param_dtype)
    self.embed = nnx.Param(
        jax.random.normal(rngs.params(), (config.vocab_size, config.d_model)).astype(dtype))
    self.encoder = Stack(config, False, rngs=rngs)
    self.decoder = Stack(config, True, rngs=rngs)
    if not config.tie_embeddings:
      self.lm_head = nnx.Param((0.05 * jax.random.normal(
          rngs.params(), (config.d_model, config.vocab_size))).astype(dtype))

  def matmul(self, x: jax.Array, w: jax.Array) -> jax.Array:
    return matmul(x, w, jnp.dtype(self.config.compute_dtype), backend.policy(self.config.backend))

  def weight_table(self) -> WeightTable:
    return weight_table(self.config)

  @property
  def conventions(self) -> EncoderDecoder:
    """How text becomes this model's inputs and targets, scored labels and decoding."""
    return self.config.conventions

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    return jnp.take(self.embed[...], tokens, axis=0).astype(jnp.float32)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Decoder hidden states (after the final norm) [..., d_model] -> [..., vocab] f32."""
    if self.config.scale_decoder_outputs:
      hidden = hidden * self.config.d_model ** -0.5
    if self.config.tie_embeddings:
      return self.matmul(hidden, self.embed[...].T)
    return self.matmul(hidden, self.lm_head[...])

  def init_cache(self, batch: int, length: int, dtype=None, source_len: int = 0) -> dict:
    """The decoder's cache: self-attention keys/values [layers, batch, length, heads, d_kv]; with
    `source_len`, also the cross-attention keys/values of the encoder output and its mask
    [1, batch, source_len] (every leaf has the batch on axis 1, so beam search can reorder it).
    dtype None: what attention reads (`backend.cache_dtype`)."""
    cfg = self.config
    dtype = dtype or backend.cache_dtype(cfg)
    shape = (cfg.num_decoder_layers, batch, length, cfg.num_heads, cfg.d_kv)
    cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    if source_len:
      cross = (cfg.num_decoder_layers, batch, source_len, cfg.num_heads, cfg.d_kv)
      cache.update(cross_k=jnp.zeros(cross, dtype), cross_v=jnp.zeros(cross, dtype),
                   source_mask=jnp.zeros((1, batch, source_len), bool))
    return cache

  def encode(self, tokens: jax.Array | None = None, *, attention_mask: jax.Array,
             embeds: jax.Array | None = None, adapter_layers: Any = None, project=None,
             rng: jax.Array | None = None) -> jax.Array:
    """Encoder input ids [B, S] (or `embeds` [B, S, D]) and mask [B, S] -> hidden [B, S, D] f32
    after the final norm."""
    cfg = self.config
    x = self.embed_tokens(tokens) if embeds is None else embeds.astype(jnp.float32)
    s = x.shape[1]
    mask = attention_mask.astype(bool)
    positions = jnp.arange(s)
    bias = self._position_bias(self.encoder, positions[None, :] - positions[:, None], True)
    full_mask = jnp.broadcast_to(mask[:, None, :], (x.shape[0], s, s))
    layers = _for_stack(adapter_layers, "encoder")
    project = project or plain_project(self.matmul)
    rngs = None if rng is None else jax.random.split(rng, cfg.num_layers)

    def body(x, per_layer):
      p, adapter_layer, layer_rng = per_layer
      return _encoder_layer(cfg, p, adapter_layer, layer_rng, x, full_mask, bias, project), None

    if cfg.remat:
      body = jax.checkpoint(body)
    x, _ = jax.lax.scan(body, x, (self.encoder.scan_arrays(backend.policy(cfg.backend)), layers,
                                  rngs))
    return rms_norm(x, self.encoder.final_norm[...], cfg.layer_norm_epsilon)

  def __call__(
      self,
      tokens: jax.Array | None = None,
      *,
      positions: jax.Array,
      attention_mask: jax.Array,
      embeds: jax.Array | None = None,
      cache: dict | None = None,
      cache_index: jax.Array | int = 0,
      adapter_layers: Any = None,
      project=None,
      rng: jax.Array | None = None,
      return_hidden: bool = False,
      encoder: dict | None = None,
  ) -> tuple[jax.Array, dict | None]:
    """Runs the decoder (and the encoder, unless given its output or a filled cache).

    tokens / embeds: the DECODER input [B, T]; positions [B, T] (the relative bias reads key -
    query positions; with a cache it reads cache slots instead). attention_mask: [B, T] (causal
    added), a full [B, T, T] mask, or with a cache [B, cache_len] over the slots.
    encoder: {"tokens" or "embeds": ..., "attention_mask": [B, S]} to encode here, or
    {"hidden": [B, S, D], "attention_mask": [B, S]}; None only with a cache whose cross-attention
    part a previous call filled (`init_cache(..., source_len=S)`).
    Returns (logits [B, T, V] f32 or final hidden states, the updated cache or None).
    """
    cfg = self.config
    project = project or plain_project(self.matmul)
    enc_rng, dec_rng = (None, None) if rng is None else jax.random.split(rng)
    hidden_src, source_mask = encoder_states(self, encoder, adapter_layers=adapter_layers,
                                             project=project, rng=enc_rng)
    if encoder is None and (cache is None or "cross_k" not in cache):
      raise ValueError("T5 decoder: pass `encoder=` or a cache holding the encoder's keys/values")

    x = self.embed_tokens(tokens) if embeds is None else embeds.astype(jnp.float32)
    b, t = x.shape[:2]
    if cache is None:
      rel = positions[:, None, :] - positions[:, :, None]  # [B, T, T] key - query
      causal = rel <= 0
      mask = (attention_mask.astype(bool) if attention_mask.ndim == 3
              else attention_mask.astype(bool)[:, None, :]) & causal
    else:
      slots = jnp.arange(cache["k"].shape[2])
      query_slots = cache_index + jnp.arange(t)
      rel = (slots[None, :] - query_slots[:, None])[None]  # [1, T, cache_len]
      mask = (rel <= 0) & attention_mask.astype(bool)[:, None, :]
    bias = self._position_bias(self.decoder, rel, False)
    if source_mask is None:
      source_mask = cache["source_mask"][0]
    cross_mask = jnp.broadcast_to(source_mask[:, None, :], (b, t, source_mask.shape[1]))
    layers = _for_stack(adapter_layers, "decoder")
    rngs = None if dec_rng is None else jax.random.split(dec_rng, cfg.num_decoder_layers)
    fill_cross = cache is not None and hidden_src is not None
    if cache is not None and "cross_k" not in cache:
      raise ValueError("T5 decoder: a cache for decoding needs init_cache(..., source_len=S)")

    def body(carry, per_layer):
      x, cache = carry
      p, adapter_layer, layer_rng, layer = per_layer
      x, cache = _decoder_layer(cfg, p, adapter_layer, layer_rng, x, mask, bias, cross_mask,
                                hidden_src, project, cache, layer, cache_index, fill_cross)
      return (x, cache), None

    if cfg.remat:
      body = jax.checkpoint(body)
    (x, cache), _ = jax.lax.scan(
        body, (x, cache), (self.decoder.scan_arrays(backend.policy(cfg.backend)), layers, rngs,
                           jnp.arange(cfg.num_decoder_layers)))
    if fill_cross:
      cache = dict(cache, source_mask=source_mask[None])
    hidden = rms_norm(x, self.decoder.final_norm[...], cfg.layer_norm_epsilon)
    return (hidden if return_hidden else self.logits(hidden)), cache

  def _position_bias(self, stack: Stack, rel: jax.Array, bidirectional: bool) -> jax.Array:
    """Relative offsets (key - query) [..., Tq, Tk] -> bias [batch or 1, heads, Tq, Tk] f32."""
    cfg = self.config
    buckets = relative_position_bucket(rel, bidirectional, cfg.relative_attention_num_buckets,
                                       cfg.relative_attention_max_distance)
    bias = jnp.take(stack.rel_bias[...].astype(jnp.float32), buckets, axis=0)  # [.., Tq, Tk, H]
    bias = jnp.moveaxis(bias, -1, -3)
    return bias if bias.ndim == 4 else bias[None]


def relative_position_bucket(rel: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
  """T5's bucket of each key - query offset: exact for small offsets, log-spaced up to
  max_distance, the last bucket beyond; bidirectional halves the buckets by sign."""
  rel = rel.astype(jnp.int32)
  bucket = jnp.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (rel > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(rel)
  else:
    distance = -jnp.minimum(rel, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # As HF: log in f32 of distance / max_exact, truncated toward zero.
  scaled = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
            / math.log(max_distance / max_exact) * (num_buckets - max_exact))
  large = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
  return bucket + jnp.where(is_small, distance, large)


def _for_stack(adapter_layers, stack: str):
  """The adapter entries of one stack's projections (a dict keyed by projection name)."""
  if adapter_layers is None:
    return None
  prefixes = ("enc.",) if stack == "encoder" else ("dec.", "cross.")
  return {k: v for k, v in adapter_layers.items() if k.startswith(prefixes)}


def _projector(p, adapter_layer, rng, project, stack_prefix: str):
  """proj(our weight name, x) through the hook, with a per-projection dropout key."""
  def proj(name, x):
    adapter_name = projection_name("encoder" if stack_prefix == "enc." else "decoder", name)
    key = None if rng is None else jax.random.fold_in(rng, _KEY_INDEX[name])
    return project(adapter_name, x, p[name], adapter_layer, key)

  return proj


_KEY_INDEX = {n: i for i, n in enumerate(
    ("q", "k", "v", "o", "cross_q", "cross_k", "cross_v", "cross_o", "gate", "up", "down"))}


def _feed_forward(cfg: T5Config, p, proj, x):
  h = rms_norm(x, p["mlp_norm"], cfg.layer_norm_epsilon)
  act = (lambda z: jax.nn.gelu(z, approximate=True)) if "gelu" in cfg.feed_forward_proj \
      else jax.nn.relu
  if cfg.gated:
    inner = act(proj("gate", h)) * proj("up", h)
  else:
    inner = act(proj("up", h))
  return x + proj("down", inner)


def _heads(cfg: T5Config, y: jax.Array) -> jax.Array:
  return y.reshape(*y.shape[:-1], cfg.num_heads, cfg.d_kv)


def _attend(cfg: T5Config, q, k, v, mask, bias):
  out = attention(q, k, v, mask, jnp.dtype(cfg.compute_dtype), backend.policy(cfg.backend),
                  scale=1.0, bias=bias)
  return out.reshape(*out.shape[:2], cfg.inner_dim)


def _encoder_layer(cfg, p, adapter_layer, rng, x, mask, bias, project):
  proj = _projector(p, adapter_layer, rng, project, "enc.")
  h = rms_norm(x, p["attn_norm"], cfg.layer_norm_epsilon)
  attn = _attend(cfg, _heads(cfg, proj("q", h)), _heads(cfg, proj("k", h)),
                 _heads(cfg, proj("v", h)), mask, bias)
  x = x + proj("o", attn)
  return _feed_forward(cfg, p, proj, x)


def _decoder_layer(cfg, p, adapter_layer, rng, x, mask, bias, cross_mask, hidden_src, project,
                   cache, layer, cache_index, fill_cross):
  """One decoder layer. cache: None or the whole cache (this layer's slices updated at `layer`);
  hidden_src: the encoder output, or None when the cache holds the cross keys/values."""
  proj = _projector(p, adapter_layer, rng, project, "dec.")
  h = rms_norm(x, p["attn_norm"], cfg.layer_norm_epsilon)
  q, k, v = (_heads(cfg, proj(n, h)) for n in ("q", "k", "v"))
  if cache is not None:
    at = (layer, 0, cache_index, 0, 0)
    cache = dict(cache, k=jax.lax.dynamic_update_slice(cache["k"], k[None].astype(
        cache["k"].dtype), at), v=jax.lax.dynamic_update_slice(cache["v"], v[None].astype(
            cache["v"].dtype), at))
    k = jax.lax.dynamic_index_in_dim(cache["k"], layer, 0, keepdims=False)
    v = jax.lax.dynamic_index_in_dim(cache["v"], layer, 0, keepdims=False)
  x = x + proj("o", _attend(cfg, q, k, v, mask, bias))

  h = rms_norm(x, p["cross_norm"], cfg.layer_norm_epsilon)
  q = _heads(cfg, proj("cross_q", h))
  if hidden_src is not None:
    ck, cv = _heads(cfg, proj("cross_k", hidden_src)), _heads(cfg, proj("cross_v", hidden_src))
    if fill_cross:
      at = (layer, 0, 0, 0, 0)
      cache = dict(cache, cross_k=jax.lax.dynamic_update_slice(
          cache["cross_k"], ck[None].astype(cache["cross_k"].dtype), at),
          cross_v=jax.lax.dynamic_update_slice(
              cache["cross_v"], cv[None].astype(cache["cross_v"].dtype), at))
  else:
    ck = jax.lax.dynamic_index_in_dim(cache["cross_k"], layer, 0, keepdims=False)
    cv = jax.lax.dynamic_index_in_dim(cache["cross_v"], layer, 0, keepdims=False)
  x = x + proj("cross_o", _attend(cfg, q, ck, cv, cross_mask, None))
  return _feed_forward(cfg, p, proj, x), cache


register(Family("t5", T5, T5Config, ("t5",), (), config_from_hf, config_from_gguf,
                weight_table))
