"""A decoder-only model's conventions (Llama): how text becomes its inputs and targets, how a
label is scored, how decoding starts. `Llama.conventions` returns them; code outside models/
asks the model, never which family it is (the encoder-decoder ones: encoder_decoder.py).

- Training: `[BOS] prompt answer EOS` in one sequence, the loss on the answer and EOS (the space
  between them joins the answer: `prompts.model_pair`); an empty prompt is next-token on the text.
- A query: the prompt, with room left in `cutoff` for the generated tokens; too long, it keeps its
  end (the task input; retrieved context comes first).
- Label scoring packs the prompt and ALL the choices into ONE sequence with a tree attention mask,
  so the prompt runs once however many labels there are:

    [pad ... pad | prompt | c1[:-1] | c2[:-1] | ...]      (left-padded to a bucket length T)

  Each choice's tokens attend to the prompt and to the earlier tokens of the same choice only, and
  their positions continue from the prompt's end, so every choice sees exactly what it would see
  appended alone. A choice's last token is never an input (nothing after it is scored), so it is
  left out; a one-token label costs no extra slot. Logits are computed only at the positions that
  predict choice tokens (the LM head over the prompt is waste).
- Decoding: the left-padded prompt is the prefill; generated tokens follow in the cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.data.batching import Example, encode_pair, encode_text
from oppu_jax.data.prompts import model_pair
from oppu_jax.models import adapted


@dataclasses.dataclass(frozen=True)
class DecoderOnly:
  config: Any  # the model's config: pad_id, eos_id, ...

  peft_task_type: ClassVar[str] = "CAUSAL_LM"
  # Generation continues the prompt's own sequence, so a chat model of this kind can write text
  # after a chat prompt (a PAG profile writer).
  continues_prompt: ClassVar[bool] = True

  def example(self, prompt: str, answer: str, tokenizer, cutoff: int) -> Example:
    """A training pair; an empty prompt is next-token on the answer."""
    bos = tokenizer.input_bos_id
    if not prompt:
      return encode_text(answer, tokenizer.encode, eos_id=tokenizer.eos_id, bos_id=bos,
                         cutoff=cutoff)
    return encode_pair(*model_pair(prompt, answer), tokenizer.encode, eos_id=tokenizer.eos_id,
                       bos_id=bos, cutoff=cutoff)

  def query(self, prompt: str, tokenizer, cutoff: int, max_new_tokens: int) -> list[int]:
    """A query prompt's ids, leaving room in `cutoff` for the generated tokens."""
    return tokenizer.encode_prompt(prompt, cutoff - max_new_tokens)

  def choice(self, label: str, tokenizer) -> list[int]:
    """A label as scored: read after " " (as in training), then EOS ("1" is not "10")."""
    return tokenizer.encode(model_pair("x", label)[1]) + [tokenizer.eos_id]

  def inputs(self, batch: dict) -> dict:
    """A training batch's model inputs (`adapted.forward`'s keywords)."""
    return {k: batch[k] for k in ("tokens", "positions", "attention_mask")}

  def choice_layout(self, choices: Sequence[Sequence[int]]) -> "PackedChoices":
    return PackedChoices(choices)

  @staticmethod
  def choice_logprobs(model, method, adapter, row: dict, shared: dict) -> jax.Array:
    """One packed row (tokens, mask, positions [T]) -> log-probs of the choice tokens [C]."""
    t = row["tokens"].shape[0]
    segment, source, target = shared["segment"], shared["source"], shared["target"]
    prompt_end = t - segment.shape[0]  # the tail starts here
    # seg[k] = -1 on prompt slots, else the choice owning the tail slot.
    seg = jnp.concatenate([jnp.full((prompt_end,), -1, jnp.int32), segment])
    slots = jnp.arange(t)
    same_branch = (seg[None, :] == -1) | (seg[None, :] == seg[:, None])  # key is prompt or kin
    tree = (slots[None, :] <= slots[:, None]) & same_branch  # [T, T]
    gather = jnp.where(source < 0, prompt_end - 1, prompt_end + source)  # [C]
    full = (tree & row["mask"][None, :])[None]  # [1, T, T]
    hidden = adapted.forward(model, method, adapter, row["tokens"][None], row["positions"][None],
                             full, return_hidden=True)[0]  # [T, D]
    logits = model.logits(jnp.take(hidden, gather, axis=0))  # [C, V]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, target[:, None], axis=1)[:, 0]  # [C]

  @staticmethod
  def decode_step(model, method, adapter, tokens, positions, mask, cache, cache_index):
    """One row [1, T] of generation -> (logits [V] at its last position, cache)."""
    hidden, cache = adapted.forward_with_cache(model, method, adapter, tokens, positions, mask,
                                               cache, cache_index)
    return model.logits(hidden[0, -1]), cache

  def decode_cache(self, model, n_virtual: int, max_new_tokens: int, batch: int, length: int):
    """generate's cache of `length` slots (prompt bucket + new tokens), with room in front for
    prompt tuning's virtual tokens."""
    del max_new_tokens
    return model.init_cache(batch, length + n_virtual)


class PackedChoices:
  """Where the choices sit in the packed tail and which hidden state predicts which token.

  extra: tail length; shared: segment [extra] choice index of each tail slot, source [C] offset
  of the predicting state relative to the tail start (-1 = the last prompt token), target [C] the
  token predicted; owner_onehot: [C, n_choices] its choice. C = total choice tokens.
  """

  def __init__(self, choices: Sequence[Sequence[int]]):
    segment, source, target, owner, tail = [], [], [], [], []
    for j, choice in enumerate(choices):
      for i, tok in enumerate(choice):
        source.append(-1 if i == 0 else len(tail) - 1)
        target.append(tok)
        owner.append(j)
        if i < len(choice) - 1:
          tail.append(tok)
          segment.append(j)
    self.tail = np.asarray(tail, np.int32)
    self.extra = len(tail)
    self.shared = {"segment": np.asarray(segment, np.int32),
                   "source": np.asarray(source, np.int32),
                   "target": np.asarray(target, np.int32)}
    self.owner_onehot = np.eye(len(choices), dtype=np.float32)[owner]  # [C, n_choices]
    self.starts = np.zeros(self.extra, np.int32)  # offset of each tail slot within its choice
    for s in range(1, self.extra):
      if segment[s] == segment[s - 1]:
        self.starts[s] = self.starts[s - 1] + 1

  def pack(self, rows, size: int, length: int, pad_id: int) -> dict[str, np.ndarray]:
    """rows [(user, prompt ids)] -> users [size], tokens / mask / positions [size, length];
    filler rows beyond the real ones are user 0 with a one-token prompt."""
    users = np.zeros(size, np.int32)
    tokens = np.full((size, length), pad_id, np.int32)
    mask = np.zeros((size, length), bool)
    positions = np.zeros((size, length), np.int32)
    prompt_end = length - self.extra
    tokens[:, prompt_end:] = self.tail
    mask[:, prompt_end:] = True
    for r in range(size):
      user, prompt = rows[r] if r < len(rows) else (0, [pad_id])
      p = len(prompt)
      users[r] = user
      tokens[r, prompt_end - p:prompt_end] = prompt
      mask[r, prompt_end - p:prompt_end] = True
      positions[r, prompt_end - p:prompt_end] = np.arange(p)
      positions[r, prompt_end:] = p + self.starts
    return {"users": users, "tokens": tokens, "mask": mask, "positions": positions}

  def totals(self, token_logp: np.ndarray) -> np.ndarray:
    """[R, C] choice-token log-probs -> [R, n_choices] summed per choice."""
    return token_logp @ self.owner_onehot
