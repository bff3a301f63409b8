"""Batched multi-user generation: every row decodes under its own user's adapter, in one batch.

Drives `models/generate.py` with a forward that gathers each row's adapter from the stacked
adapters (`UserAdapters.gather` on a [rows] user index) and vmaps the per-row model call over
rows, with the base weights broadcast and each row's KV-cache slice (cache batch axis 1) going
with its adapter.
Beam search works too: generate turns row r into rows r*num_beams.., so the forward repeats each
user index num_beams times once it sees num_beams times as many rows.

What a row's step does and how its cache is laid out is the model's convention
(`model.conventions.decode_step` / `decode_cache`): an encoder-decoder's "prompt" is its encoder
input, which the prefill encodes before the decoder-start token (models/encoder_decoder.py).

Prompt tuning: the virtual tokens take P extra cache slots in front. Their keys and values
depend on the adapter only (they come first and attend only to each other), so the prefill runs
[virtual tokens; prompt] and every later step is shifted by P slots (positions too, as HF PEFT
numbers them: virtual 0..P-1, real tokens from P).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.eval import base_state
from oppu_jax.models import generate as gen
from oppu_jax.models.decoding import Decoding
from oppu_jax.models.interface import LanguageModel
from oppu_jax.peft.stack import UserAdapters


def generate_for_rows(
    model: LanguageModel,
    adapters: UserAdapters | None,
    rows: Sequence[tuple[int, Sequence[int]]],
    decoding: Decoding,
    *,
    eos_id: int,
    pad_id: int,
    progress: Callable[[int], None] | None = None,
    mesh=None,
) -> list[list[int]]:
  """Generated ids per row (cut before the first EOS), in the order of `rows`.

  adapters: the users' stacked adapters (their method inside), or None for the bare base.
  rows: (user_index, prompt ids).
  decoding: as `generate.generate`; one program per (prompt bucket, batch, method). Sampling
    draws depend on its seed and on the row's place in its batch (rows are batched by prompt
    length), so they are reproducible for the same rows.
  progress: if given, called with the number of rows each batch finished.
  mesh: a (users, model) mesh of this process's devices: each batch's rows split over its users
    axis, the base weights over its model axis, the adapters whole.
  """
  base_state.check_users(adapters, rows)
  graphdef, base, adapters, place = base_state.prepare(model, adapters, mesh)
  virtual = n_virtual(adapters)
  # Equal for equal graphs, so generate's jitted loops find their compiled programs again.
  rows_forward = RowsForward(graphdef)
  cache = functools.partial(model.conventions.decode_cache, model, virtual,
                            decoding.max_new_tokens)
  n = len(rows)
  size = min(decoding.batch_size, 1 << max(n - 1, 0).bit_length())
  # Similar lengths share a batch (less padding); the caller gets the given order back.
  order = sorted(range(n), key=lambda i: -len(rows[i][1]))
  outputs: list[list[int]] = [[] for _ in range(n)]
  for batch_no, start in enumerate(range(0, n, size)):
    index = order[start:start + size]
    # Exactly `size` prompts per call, so generate's batch is `size` rows, in this order.
    users = np.zeros(size, np.int32)
    users[:len(index)] = [rows[i][0] for i in index]
    prompts = [list(rows[i][1]) for i in index] + [[pad_id]] * (size - len(index))
    users = jnp.asarray(users) if place is None else place(users)
    forward = jax.tree_util.Partial(rows_forward, base, adapters, users)
    batch_decoding = dataclasses.replace(
        decoding, seed=decoding.seed + 1_000_003 * batch_no, batch_size=size)
    out = gen.generate(
        forward, prompts, batch_decoding, init_cache=cache, eos_id=eos_id, pad_id=pad_id,
        cache_batch_axis=1, keep_order=True, place=place,
    )
    for row, i in enumerate(index):
      outputs[i] = out[row]
    if progress is not None:
      progress(len(index))
  return outputs


def trace_batch(model: LanguageModel, adapters: UserAdapters | None, users: np.ndarray,
                tokens: np.ndarray, mask: np.ndarray, decoding: Decoding, *, eos_id: int,
                pad_id: int, mesh=None):
  """The decoding program of one batch of `generate_for_rows` (users [B]; tokens, mask [B, P]
  left-padded), traced and not run, for a model that may be abstract and a mesh of devices this
  host may not have: for `oppu_jax.compile_check`."""
  graphdef, base, adapters, (users, tokens, mask), _ = base_state.trace_inputs(
      model, adapters, (users, tokens, mask), None, mesh)
  cache = functools.partial(model.conventions.decode_cache, model, n_virtual(adapters),
                            decoding.max_new_tokens)
  forward = jax.tree_util.Partial(RowsForward(graphdef), base, adapters, users)
  return gen.trace_batch(forward, tokens, mask, decoding, init_cache=cache, eos_id=eos_id,
                         pad_id=pad_id, cache_batch_axis=1)


@dataclasses.dataclass(frozen=True)
class RowsForward:
  """generate's forward for rows of mixed users. A value (equal for equal graphs), not a fresh
  closure, because the jitted generation loops key their compiled programs on it. The server's
  continuous batching (`oppu_jax/serve/engine.py`) runs it too, with a cache_index per row."""

  graphdef: Any

  def __call__(self, base, adapters, users, tokens, positions, attention_mask, cache,
               cache_index):
    """tokens, positions [B, T]; attention_mask [B, slots]; cache leaves [layers, B, ...];
    users [B or B / num_beams]; cache_index: shared (an int, or a scalar) or per row [B]
    -> (logits [B, V] at the last position, cache)."""
    rows = tokens.shape[0]
    if rows != users.shape[0]:  # beam search: row r is now rows r*num_beams ..
      users = jnp.repeat(users, rows // users.shape[0])
    method = None if adapters is None else adapters.method
    picked = None if adapters is None else adapters.gather(users)

    def one_row(adapter, toks, pos, mask, row_cache, index):
      model = nnx.merge(self.graphdef, base)
      row_cache = jax.tree.map(lambda c: c[:, None], row_cache)
      logits, row_cache = model.conventions.decode_step(
          model, method, adapter, toks[None], pos[None], mask[None], row_cache, index)
      return logits, jax.tree.map(lambda c: c[:, 0], row_cache)

    if jnp.ndim(cache_index) == 1:  # rows at different lengths (the server's decode step)
      return jax.vmap(one_row, in_axes=(0, 0, 0, 0, 1, 0), out_axes=(0, 1))(
          picked, tokens, positions, attention_mask, cache, cache_index)
    # A shared index is closed over, not mapped: a family may read a literal 0 as the prefill.
    return jax.vmap(functools.partial(one_row, index=cache_index), in_axes=(0, 0, 0, 0, 1),
                    out_axes=(0, 1))(picked, tokens, positions, attention_mask, cache)


def n_virtual(adapters: UserAdapters | None) -> int:
  """Cache slots the method's prefix takes in front of the prompt (prompt tuning's virtual
  tokens; 0 for the others and for the bare base)."""
  if adapters is None:
    return 0
  one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), adapters.tree)
  prefix = jax.eval_shape(adapters.method.prefix, one)
  return 0 if prefix is None else prefix.shape[0]
