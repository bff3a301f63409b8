"""Label scoring for an encoder-decoder model (T5): the log-probability of each label string as
the decoder's output, every row under its own user's adapter.

One row = one (user, encoder input). The encoder runs once per row; the decoder then reads all
the choices side by side, one decoder sequence per choice ([start] choice[:-1], right-padded),
each cross-attending to that row's encoder states. (The decoder-only scorer packs the choices
into one sequence with a tree mask instead; a T5 decoder's inputs are only the short label
strings, so a plain [choices, L] batch costs little and needs no mask tricks.)

Rows of a batch may belong to different users: the rows' adapters are gathered from the stacked
adapters and the per-row function is vmapped with the base weights broadcast, as in `score.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.eval.score import DEFAULT_BUCKETS, Programs, _bucket, _check
from oppu_jax.models import backend
from oppu_jax.models import adapted
from oppu_jax.peft.stack import UserAdapters


def score_choices(
    model,
    adapters: UserAdapters | None,
    rows: Sequence[tuple[int, Sequence[int]]],
    choices: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    stats: dict | None = None,
    programs: Programs | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
  """Summed log-probabilities [n_rows, n_choices] (f32) of each choice's tokens as the decoder
  output for each row's encoder input; the arguments are `score.score_choices`'s, except that a
  row's ids are the ENCODER input (ending in EOS) and each choice should end in EOS."""
  choices = [list(c) for c in choices]
  _check(adapters, rows, choices, batch_size)
  start = model.config.decoder_start_id
  width = max(len(c) for c in choices)
  dec_tokens = np.zeros((len(choices), width), np.int32)
  dec_mask = np.zeros((len(choices), width), bool)
  targets = np.zeros((len(choices), width), np.int32)
  for j, c in enumerate(choices):
    dec_tokens[j, :len(c)] = [start] + c[:-1]
    dec_mask[j, :len(c)] = True
    targets[j, :len(c)] = c
  programs = Programs(_SCORE_BATCH) if programs is None else programs
  graphdef, base = nnx.split(model)
  base = backend.frozen_base(base, model.config)
  adapters = None if adapters is None else jax.tree.map(jnp.asarray, adapters)
  n = len(rows)
  size = min(batch_size, 1 << max(n - 1, 0).bit_length())
  order = sorted(range(n), key=lambda i: -len(rows[i][1]))
  out = np.zeros((n, len(choices)), np.float32)
  programs_before, batches = len(programs), 0
  for begin in range(0, n, size):
    index = order[begin:begin + size]
    length = _bucket(max(len(rows[i][1]) for i in index), buckets)
    users = np.zeros(size, np.int32)
    source = np.full((size, length), model.config.pad_id, np.int32)
    source_mask = np.zeros((size, length), bool)
    for r, i in enumerate(index):
      user, ids = rows[i]
      users[r] = user
      source[r, :len(ids)] = ids  # right-padded, as T5 is trained
      source_mask[r, :len(ids)] = True
    source_mask[len(index):, 0] = True  # filler rows: one (pad) token, results dropped
    token_logp = np.asarray(programs.run(graphdef, base, adapters, users, source, source_mask,
                                         dec_tokens, dec_mask, targets))
    out[index] = (token_logp[:len(index)] * dec_mask).sum(-1)
    batches += 1
    if progress is not None:
      progress(len(index))
  if stats is not None:
    stats["compilations"] = len(programs) - programs_before
    stats["batches"] = batches
  return out


def _score_batch(graphdef, base, adapters, users, source, source_mask, dec_tokens, dec_mask,
                 targets):
  """users [R]; source, source_mask [R, S]; dec_tokens, dec_mask, targets [C, L] (shared by the
  rows) -> log-probs of every target token [R, C, L]."""
  method = None if adapters is None else adapters.method
  picked = None if adapters is None else adapters.gather(users)
  n_choices, width = dec_tokens.shape
  positions = jnp.broadcast_to(jnp.arange(width), (n_choices, width))

  def one_row(adapter, src, src_mask):
    model = nnx.merge(graphdef, base)
    encoder = adapted.encoder_inputs(model, method, adapter,
                                   {"tokens": src[None], "attention_mask": src_mask[None]})
    hook = adapted.hook(model, method, adapter)
    hidden = model.encode(encoder.get("tokens"), embeds=encoder.get("embeds"),
                          attention_mask=encoder["attention_mask"], **hook)  # [1, S', D]
    encoded = {"hidden": jnp.broadcast_to(hidden, (n_choices, *hidden.shape[1:])),
               "attention_mask": jnp.broadcast_to(encoder["attention_mask"],
                                                  (n_choices, hidden.shape[1]))}
    logits, _ = model(dec_tokens, positions=positions, attention_mask=dec_mask, encoder=encoded,
                      **hook)  # [C, L, V]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [C, L]

  return jax.vmap(one_row)(picked, source, source_mask)


_SCORE_BATCH = jax.jit(_score_batch, static_argnums=0)

