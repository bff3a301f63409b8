"""The rows of one prompt bucket: their KV cache on device, their state on host, and the compiled
programs that fill a row (prefill) and move every row one token (decode).

A row's prompt is left-padded to the pool's bucket and its cache holds bucket + max_new slots, as
`generate` lays out a batch, so a row decodes as it would in a batch of its own; rows sit at
different lengths, so the step takes a cache index per row (`decode.RowsForward`).

The step runs the first `width` rows only, `width` the smallest power of two that covers every
row in use (a new request takes the lowest free row): one request alone costs a one-row step,
not a full pool's. Up to log2(rows) + 1 programs per pool.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.models import generate as gen


class Pool:
  """Rows [rows] of one bucket. `forward(users)` -> generate's forward over the given adapter
  slots (the engine's `RowsForward` over its base and device stack)."""

  def __init__(self, bucket: int, rows: int, max_new: int, init_cache):
    self.bucket, self.max_new = bucket, max_new
    self.row_spec = gen.cache_spec_of(init_cache, 1, bucket + max_new)
    self.cache = gen.empty_cache(gen.cache_spec_of(init_cache, rows, bucket + max_new))
    self.tickets: list = [None] * rows
    self.slots = np.zeros(rows, np.int32)  # device adapter slot of each row
    self.lengths = np.ones(rows, np.int32)  # real prompt tokens
    self.steps = np.zeros(rows, np.int32)  # tokens generated so far
    self.mask = np.zeros((rows, bucket + max_new), bool)  # cache slots a row attends to
    self.mask[:, -1] = True  # an idle row attends to something (no all-masked softmax)
    self.seeds = np.zeros(rows, np.uint32)
    self.temperature = np.zeros(rows, np.float32)
    self.top_p = np.ones(rows, np.float32)

  def used(self) -> int:
    return sum(t is not None for t in self.tickets)

  def free_row(self) -> int | None:
    return next((r for r, t in enumerate(self.tickets) if t is None), None)

  def prefill(self, forward, row: int, ticket, slot: int, pad_id: int):
    """Fills `row` with the ticket's prompt -> (first token, its log-prob)."""
    r = ticket.request
    tokens, mask = gen.left_pad([list(r.prompt)], 1, self.bucket, pad_id)
    sampling = (jnp.full((1,), r.seed, jnp.uint32), jnp.zeros((1,), jnp.int32),
                jnp.full((1,), r.temperature, jnp.float32), jnp.full((1,), r.top_p, jnp.float32))
    tok, lp, row_cache = _prefill(forward(jnp.asarray([slot], jnp.int32)), tokens, mask,
                                  sampling, cache_spec=self.row_spec, max_new=self.max_new)
    self.cache = _insert(self.cache, row_cache, jnp.int32(row))
    self.tickets[row], self.slots[row], self.steps[row] = ticket, slot, 0
    self.lengths[row] = len(r.prompt)
    self.mask[row] = np.concatenate([np.asarray(mask[0]), np.ones(self.max_new, bool)])
    self.seeds[row], self.temperature[row], self.top_p[row] = r.seed, r.temperature, r.top_p
    return int(tok[0]), float(lp[0])

  def step(self, forward) -> dict[int, tuple[int, float]]:
    """One token for every row in use -> {row: (token, log-prob)}, as `generate`'s loop at the
    row's own step."""
    used = [r for r, t in enumerate(self.tickets) if t is not None]
    width = 1 << max(used).bit_length() if used else 1  # rows 0..width-1 cover every used row
    width = min(width, len(self.tickets))
    live = np.array([t is not None for t in self.tickets[:width]])
    last = np.array([t.tokens[-1] if t is not None else 0 for t in self.tickets[:width]],
                    np.int32)
    steps = np.where(live, self.steps[:width], 1)
    positions = self.lengths[:width] + steps - 1
    index = np.minimum(self.bucket + steps - 1, self.bucket + self.max_new - 1)
    tok, lp, self.cache = _decode(
        forward(jnp.asarray(self.slots[:width])), jnp.asarray(last), jnp.asarray(positions),
        jnp.asarray(self.mask[:width]), jnp.asarray(index), jnp.asarray(self.seeds[:width]),
        jnp.asarray(steps), jnp.asarray(self.temperature[:width]),
        jnp.asarray(self.top_p[:width]), cache=self.cache)
    tok, lp = np.asarray(tok), np.asarray(lp)
    return {r: (int(tok[r]), float(lp[r])) for r in used}

  def free(self, row: int):
    self.tickets[row] = None


@functools.partial(jax.jit, static_argnames=("cache_spec", "max_new"))
def _prefill(forward, tokens, mask, sampling, *, cache_spec, max_new):
  """tokens, mask [1, P] left-padded -> (first token [1], its log-prob [1], the row's cache)."""
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  slot_mask = jnp.concatenate([mask, jnp.ones((mask.shape[0], max_new), bool)], axis=1)
  logits, cache = forward(tokens, positions, slot_mask, gen.empty_cache(cache_spec), 0)
  tok, lp = _choose(gen.last_logits(logits), *sampling)
  return tok, lp, cache


@functools.partial(jax.jit, donate_argnames=("cache",))
def _decode(forward, last, positions, mask, index, seeds, steps, temperature, top_p, *, cache):
  """One step of the first W rows (every argument [W]; cache batch axis 1 holds all rows) ->
  (tokens, log-probs, the whole cache with those rows advanced, in place)."""
  width = last.shape[0]
  rows = jax.tree.map(lambda c: jax.lax.slice_in_dim(c, 0, width, axis=1), cache)
  logits, rows = forward(last[:, None], positions[:, None], mask, rows, index)
  tok, lp = _choose(gen.last_logits(logits), seeds, steps, temperature, top_p)
  cache = jax.tree.map(lambda c, r: jax.lax.dynamic_update_slice_in_dim(c, r, 0, axis=1),
                       cache, rows)
  return tok, lp, cache


@functools.partial(jax.jit, donate_argnums=0)
def _insert(cache, row_cache, row):
  """The pool's cache with row `row` (cache batch axis 1) replaced by a prefilled row's."""
  return jax.tree.map(lambda c, r: jax.lax.dynamic_update_slice_in_dim(c, r, row, axis=1),
                      cache, row_cache)


def _choose(logits, seeds, steps, temperature, top_p):
  """logits [rows, V] f32 -> (token, its log-prob under the model) [rows]: argmax where the
  temperature is 0, else a draw after temperature and nucleus top_p, keyed by (seed, step)."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  greedy = jnp.argmax(logits, axis=-1)

  def draw(_):
    def one(seed, step, row, t, p):
      key = jax.random.fold_in(jax.random.key(seed), step)
      scaled = row / jnp.maximum(t, 1e-6)
      order = jnp.argsort(-scaled)
      ranked = scaled[order]
      probs = jax.nn.softmax(ranked)
      keep = (jnp.cumsum(probs) - probs) < p  # the smallest head reaching top_p
      return order[jax.random.categorical(key, jnp.where(keep, ranked, -jnp.inf))]

    sampled = jax.vmap(one)(seeds, steps, logits, temperature, top_p)
    return jnp.where(temperature > 0, sampled, greedy)

  # The sort over the vocabulary runs only when some row samples.
  tok = jax.lax.cond(jnp.any(temperature > 0), draw, lambda _: greedy, None).astype(jnp.int32)
  return tok, jnp.take_along_axis(logp, tok[:, None], axis=1)[:, 0]
