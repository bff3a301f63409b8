"""What the trainer and the evaluators need from a model: `LanguageModel`.

`Llama` satisfies it; a new family's module must too (tests/models/test_family.py checks).

An encoder-decoder (T5) fits it as follows: `embed_tokens`, `__call__`, `hidden`, `logits` and
the cache are the decoder side's (tokens = the decoder input, the cache holds the decoder's
self-attention keys/values); the encoder input travels as one extra keyword,
`encoder={"tokens" or "embeds": [batch, src], "attention_mask": [batch, src]}`, encoded once per
call (or, for decoding, once by the caller and passed as `encoder={"hidden": ...}`); prompt
tuning's prefix (`method.prefix(adapter)`) is prepended to the encoder's embeds, not the
decoder's; `adapter_layers` carries one leading layer axis per stack (a dict of encoder and
decoder stacks), and `project(name, ...)` receives the table's projection names (e.g. "enc.q").
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

from oppu_jax.models.weights import WeightTable


@runtime_checkable
class LanguageModel(Protocol):
  """config: has pad_id, eos_id, bos_id, compute_dtype, param_dtype, backend (resolved)."""

  config: Any

  @property
  def conventions(self) -> Any:
    """How text becomes this model's inputs and targets, how labels are scored and decoding
    starts: decoder_only.DecoderOnly or encoder_decoder.EncoderDecoder (callers ask this, never
    which family the model is)."""

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """[batch, seq] int -> [batch, seq, hidden] f32."""

  def __call__(self, tokens: jax.Array | None = None, *, positions: jax.Array,
               attention_mask: jax.Array, embeds: jax.Array | None = None,
               cache: dict | None = None, cache_index: jax.Array | int = 0,
               adapter_layers: Any = None, project: Any = None, rng: jax.Array | None = None,
               return_hidden: bool = False) -> tuple[jax.Array, dict | None]:
    """(logits [batch, seq, vocab] f32 or final hidden states; the updated cache or None).
    `project(name, x, w, adapter_layer, rng)` computes every adaptable projection."""

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Final hidden states [..., hidden] -> [..., vocab] f32."""

  def matmul(self, x: jax.Array, w: jax.Array) -> jax.Array:
    """x @ w -> f32 with the model's compute dtype and backend policy bound."""

  def weight_table(self) -> WeightTable:
    """Every weight's names, shape, axes and adaptability (models/weights.py)."""

  def init_cache(self, batch: int, length: int, dtype=...) -> dict[str, jax.Array]:
    """An empty KV cache for `__call__(cache=...)` with `length` slots."""
