"""An encoder-decoder model's conventions (T5): how text becomes its inputs and targets, how a
label is scored, how decoding starts. `T5.conventions` returns them; the same methods as
decoder_only.py's, so callers never ask which kind they hold.

What a model of this kind offers: `encode(tokens | embeds, attention_mask, **hook)` -> encoder
states; `__call__(decoder tokens, ..., encoder={"tokens"|"embeds", "attention_mask"} or
{"hidden", "attention_mask"})`, reading `encoder=` through `encoder_states`;
`init_cache(batch, length, source_len=S)` with self-attention "k"/"v" and cross-attention
"cross_k" (slots on axis 2) among its leaves; `config.decoder_start_id`.

- Training: the encoder reads `prompt EOS` (too long: its start is cut, so the task input at the
  end survives retrieved context); the decoder reads `[start] answer EOS`, the loss on answer and
  EOS. Batches carry the encoder input as source_tokens / source_mask.
- A query: `prompt EOS` in `cutoff` tokens (generation has its own budget).
- Label scoring: the encoder runs once per row; the decoder reads all the choices side by side,
  one decoder sequence per choice ([start] choice[:-1], right-padded), each cross-attending to
  that row's encoder states (the label strings are short: no packing needed).
- Decoding: a row's "prompt" is its encoder input; the prefill encodes it, fills the
  cross-attention cache and runs the decoder-start token in the last prompt slot, so generated
  tokens take the slots after it, as a decoder-only model's do.
- Prompt tuning's virtual tokens go in front of the encoder input (`adapted.encoder_inputs`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.data.batching import Example, encode_with_source
from oppu_jax.models import adapted


@dataclasses.dataclass(frozen=True)
class EncoderDecoder:
  config: Any  # the model's config: pad_id, eos_id, decoder_start_id, ...

  peft_task_type: ClassVar[str] = "SEQ_2_SEQ_LM"
  continues_prompt: ClassVar[bool] = False  # it answers an encoder input: no chat writer

  def example(self, prompt: str, answer: str, tokenizer, cutoff: int) -> Example:
    """A training pair; an empty prompt is an encoder input of EOS alone."""
    return encode_with_source(prompt, answer, tokenizer.encode, eos_id=tokenizer.eos_id,
                              decoder_start_id=self.config.decoder_start_id,
                              source_cutoff=cutoff, target_cutoff=cutoff)

  def query(self, prompt: str, tokenizer, cutoff: int, max_new_tokens: int) -> list[int]:
    """The encoder input `prompt EOS` in `cutoff` tokens, keeping the prompt's end."""
    del max_new_tokens  # the decoder has its own budget
    ids = tokenizer.encode(prompt)
    return ids[max(len(ids) - (cutoff - 1), 0):] + [tokenizer.eos_id]

  def choice(self, label: str, tokenizer) -> list[int]:
    """A label as the decoder writes it (the start token begins it), then EOS."""
    return tokenizer.encode(label) + [tokenizer.eos_id]

  def inputs(self, batch: dict) -> dict:
    """A training batch's model inputs (`adapted.forward`'s keywords)."""
    return {"tokens": batch["tokens"], "positions": batch["positions"],
            "attention_mask": batch["attention_mask"],
            "encoder": {"tokens": batch["source_tokens"], "attention_mask": batch["source_mask"]}}

  def choice_layout(self, choices: Sequence[Sequence[int]]) -> "DecodedChoices":
    return DecodedChoices(choices, self.config.decoder_start_id)

  @staticmethod
  def choice_logprobs(model, method, adapter, row: dict, shared: dict) -> jax.Array:
    """One row's encoder input (source, source_mask [S]) -> log-probs of every choice token
    [C, L] (decoder inputs, mask and targets [C, L] shared by the rows)."""
    dec_tokens, dec_mask, targets = shared["tokens"], shared["mask"], shared["targets"]
    n_choices, width = dec_tokens.shape
    encoder = adapted.encoder_inputs(model, method, adapter, {
        "tokens": row["source"][None], "attention_mask": row["source_mask"][None]})
    hook = adapted.hook(model, method, adapter)
    hidden = model.encode(encoder.get("tokens"), embeds=encoder.get("embeds"),
                          attention_mask=encoder["attention_mask"], **hook)  # [1, S', D]
    encoded = {"hidden": jnp.broadcast_to(hidden, (n_choices, *hidden.shape[1:])),
               "attention_mask": jnp.broadcast_to(encoder["attention_mask"],
                                                  (n_choices, hidden.shape[1]))}
    positions = jnp.broadcast_to(jnp.arange(width), (n_choices, width))
    logits, _ = model(dec_tokens, positions=positions, attention_mask=dec_mask, encoder=encoded,
                      **hook)  # [C, L, V]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [C, L]

  @staticmethod
  def decode_step(model, method, adapter, tokens, positions, mask, cache, cache_index):
    """One row of generation -> (logits [V] at its last position, cache). The prefill (the
    literal cache_index 0) gets the left-padded encoder input [1, P]: it encodes it (virtual
    tokens in front), fills the cross-attention cache and runs the decoder-start token at slot
    P - 1. Later calls run one token at slot cache_index >= P. The decoder attends to slots
    P - 1 onwards (its own tokens), whatever the generator's mask says of the prompt."""
    del positions  # the decoder reads relative slot offsets, not positions
    prefix = None if method is None else method.prefix(adapter)
    source_len = cache["cross_k"].shape[2] - (0 if prefix is None else prefix.shape[0])  # P
    decoder_slots = jnp.arange(cache["k"].shape[2]) >= source_len - 1
    hook = adapted.hook(model, method, adapter)
    if isinstance(cache_index, int) and cache_index == 0:
      encoder = adapted.encoder_inputs(model, method, adapter, {
          "tokens": tokens, "attention_mask": mask[:, :source_len]})
      start = jnp.full((1, 1), model.config.decoder_start_id, jnp.int32)
      hidden, cache = model(start, positions=jnp.zeros((1, 1), jnp.int32),
                            attention_mask=decoder_slots[None], cache=cache,
                            cache_index=source_len - 1, encoder=encoder, return_hidden=True,
                            **hook)
    else:
      hidden, cache = model(tokens, positions=jnp.zeros((1, 1), jnp.int32),
                            attention_mask=decoder_slots[None], cache=cache,
                            cache_index=cache_index, return_hidden=True, **hook)
    return model.logits(hidden[0, -1]), cache

  def decode_cache(self, model, n_virtual: int, max_new_tokens: int, batch: int, length: int):
    """generate asks for (prompt bucket + max_new_tokens) slots: the decoder's self-attention
    cache is that long, the cross-attention part holds the encoder input (+ virtual tokens)."""
    return model.init_cache(batch, length, source_len=length - max_new_tokens + n_virtual)


def encoder_states(model, encoder: dict | None, *, adapter_layers=None, project=None, rng=None):
  """A decoder call's `encoder=` argument -> (encoder states [B, S, D], mask [B, S] bool), both
  None without one: {"hidden", "attention_mask"} as given, or {"tokens" | "embeds",
  "attention_mask"} encoded here with the same adapter hook. Every family of this kind reads
  `encoder=` through it."""
  if encoder is None:
    return None, None
  mask = encoder["attention_mask"].astype(bool)
  hidden = encoder.get("hidden")
  if hidden is None:
    hidden = model.encode(encoder.get("tokens"), embeds=encoder.get("embeds"), attention_mask=mask,
                          adapter_layers=adapter_layers, project=project, rng=rng)
  return hidden, mask


class DecodedChoices:
  """The choices as decoder inputs [start] c[:-1] and targets c, right-padded to the longest:
  shared tokens, mask, targets [n_choices, L]; no tail in the encoder input (extra = 0)."""

  extra = 0

  def __init__(self, choices: Sequence[Sequence[int]], start: int):
    width = max(len(c) for c in choices)
    tokens = np.zeros((len(choices), width), np.int32)
    mask = np.zeros((len(choices), width), bool)
    targets = np.zeros((len(choices), width), np.int32)
    for j, c in enumerate(choices):
      tokens[j, :len(c)] = [start] + list(c[:-1])
      mask[j, :len(c)] = True
      targets[j, :len(c)] = c
    self.shared = {"tokens": tokens, "mask": mask, "targets": targets}

  def pack(self, rows, size: int, length: int, pad_id: int) -> dict[str, np.ndarray]:
    """rows [(user, encoder ids)] -> users [size], source / source_mask [size, length],
    right-padded as T5 is trained; filler rows are one pad token (results dropped)."""
    users = np.zeros(size, np.int32)
    source = np.full((size, length), pad_id, np.int32)
    source_mask = np.zeros((size, length), bool)
    for r, (user, ids) in enumerate(rows):
      users[r] = user
      source[r, :len(ids)] = ids
      source_mask[r, :len(ids)] = True
    source_mask[len(rows):, 0] = True
    return {"users": users, "source": source, "source_mask": source_mask}

  def totals(self, token_logp: np.ndarray) -> np.ndarray:
    """[R, n_choices, L] token log-probs -> [R, n_choices] summed over each choice's tokens."""
    return (token_logp * self.shared["mask"]).sum(-1)
