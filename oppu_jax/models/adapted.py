"""Running the base model with one adapter: the one place that joins a PEFT method to the model.

`method` is a PEFT method object (see peft/method.py; None for the bare base); `adapter` is its
pytree. Batched over users by the caller with `jax.vmap` (base broadcast, adapter mapped). The
model's projection hook gets the method's `project` with the model's own matmul bound.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp



def forward(
    model,
    method,
    adapter,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array,
    *,
    rng: jax.Array | None = None,
    return_hidden: bool = False,
    encoder: dict | None = None,
) -> jax.Array:
  """Logits [batch, seq, vocab] (or final hidden states) for the real tokens only.

  With prompt tuning the virtual tokens come first, at positions 0..n-1; the real tokens follow
  at n + position, as HF PEFT numbers them. Their outputs are dropped before returning.
  encoder: an encoder-decoder model's encoder input {"tokens": [B, S], "attention_mask": [B, S]};
  `tokens` are then the decoder's, and prompt tuning's virtual tokens go in front of the encoder
  input (`encoder_inputs`).
  """
  if encoder is not None:
    out, _ = model(tokens, positions=positions, attention_mask=attention_mask,
                   encoder=encoder_inputs(model, method, adapter, encoder),
                   return_hidden=return_hidden, **hook(model, method, adapter, rng))
    return out
  if method is None:
    out, _ = model(tokens, positions=positions, attention_mask=attention_mask,
                   return_hidden=return_hidden)
    return out
  embeds = model.embed_tokens(tokens)
  prefix = method.prefix(adapter)
  n_prefix = 0
  if prefix is not None:
    batch = tokens.shape[0]
    n_prefix = prefix.shape[0]
    embeds = jnp.concatenate([jnp.broadcast_to(prefix, (batch, *prefix.shape)), embeds], axis=1)
    attention_mask = _with_prefix_mask(attention_mask.astype(bool), n_prefix)
    positions = jnp.concatenate(
        [jnp.broadcast_to(jnp.arange(n_prefix), (batch, n_prefix)), positions + n_prefix], axis=1)
  out, _ = model(
      embeds=embeds, positions=positions, attention_mask=attention_mask,
      adapter_layers=adapter.get("layers"), project=bind_project(model, method), rng=rng,
      return_hidden=return_hidden,
  )
  return out[:, n_prefix:]


def encoder_inputs(model, method, adapter, encoder: dict) -> dict:
  """The encoder input with prompt tuning's virtual tokens in front (HF PEFT's seq2seq prompt
  tuning with num_transformer_submodules = 1: the encoder input only), else as given."""
  prefix = None if method is None else method.prefix(adapter)
  if prefix is None:
    return encoder
  tokens, mask = encoder["tokens"], encoder["attention_mask"].astype(bool)
  batch, n = tokens.shape[0], prefix.shape[0]
  embeds = jnp.concatenate([jnp.broadcast_to(prefix, (batch, *prefix.shape)),
                            model.embed_tokens(tokens)], axis=1)
  return {"embeds": embeds,
          "attention_mask": jnp.concatenate([jnp.ones((batch, n), bool), mask], axis=1)}


def hook(model, method, adapter, rng=None) -> dict:
  """The model's adapter keywords for `method` (none for the bare base)."""
  if method is None:
    return {}
  return dict(adapter_layers=adapter.get("layers"), project=bind_project(model, method), rng=rng)


def bind_project(model, method):
  """The model's hook `project(name, x, w, adapter_layer, rng)`: the method's, with the model's
  own matmul (its compute dtype and backend policy), so adapter products follow the same policy."""
  return functools.partial(method.project, matmul=model.matmul)


def _with_prefix_mask(mask: jax.Array, n_prefix: int) -> jax.Array:
  """Every real token may attend to every virtual token; virtual tokens attend causally among
  themselves. mask: [batch, seq] or a full [batch, seq, seq] mask."""
  batch = mask.shape[0]
  if mask.ndim == 2:
    return jnp.concatenate([jnp.ones((batch, n_prefix), bool), mask], axis=1)
  seq = mask.shape[1]
  prefix_rows = jnp.concatenate(
      [jnp.tril(jnp.ones((n_prefix, n_prefix), bool)), jnp.zeros((n_prefix, seq), bool)], axis=1)
  real_rows = jnp.concatenate([jnp.ones((seq, n_prefix), bool)[None].repeat(batch, 0), mask],
                              axis=2)
  return jnp.concatenate([jnp.broadcast_to(prefix_rows, (batch, n_prefix, n_prefix + seq)),
                          real_rows], axis=1)


def forward_with_cache(model, method, adapter, tokens, positions, mask, cache, cache_index):
  """`forward` with a KV cache -> (final hidden states [B, T, D], cache), for generation.

  Prompt tuning takes n extra cache slots in front: the prefill (the call with the literal
  cache_index 0) writes the virtual tokens there; later calls shift positions and the index by n.
  mask: [B, cache_len - n] over the caller's slots."""
  if method is None:
    return model(tokens, positions=positions, attention_mask=mask, cache=cache,
                 cache_index=cache_index, return_hidden=True)
  embeds = model.embed_tokens(tokens)
  prefix = method.prefix(adapter)
  if prefix is not None:
    n = prefix.shape[0]
    mask = jnp.concatenate([jnp.ones((1, n), bool), mask.astype(bool)], axis=1)
    # generate's prefill is the only call with the literal cache_index 0; decode steps pass a
    # traced index. The prefill writes the virtual tokens in slots 0..n-1.
    if isinstance(cache_index, int) and cache_index == 0:
      embeds = jnp.concatenate([prefix[None].astype(embeds.dtype), embeds], axis=1)
      positions = jnp.concatenate([jnp.arange(n)[None], positions + n], axis=1)
    else:
      positions = positions + n
      cache_index = cache_index + n
  hidden, cache = model(embeds=embeds, positions=positions, attention_mask=mask, cache=cache,
                        cache_index=cache_index, adapter_layers=adapter.get("layers"),
                        project=bind_project(model, method), return_hidden=True)
  return hidden, cache
