"""Batched generation with a KV cache: greedy, sampling (temperature, top-k, top-p) and beam search,
one jit-compiled program per (batch, prompt bucket, max_new_tokens, method).

The generator knows nothing of models or adapters. It drives a `forward` the caller builds:

  forward(tokens [B, T], positions [B, T], attention_mask [B, cache_len], cache, cache_index)
    -> (logits [B, V] for the last input position, or [B, T, V]; the updated cache)

with the conventions of a decoder-only model's `__call__` (mask over cache slots, True = a real token; new keys and
values written at cache_index..cache_index+T-1). Pass `forward` as a pytree callable such as
`jax.tree_util.Partial(fn, weights, adapters)`: its arrays then enter the program as arguments, so
repeated calls reuse one compiled program and the weights are not baked in as constants. A plain
closure also works, but compiles once per closure object and embeds what it closes over.
`make_forward(model)` builds such a forward for a plain model.

Prompts are sorted by length, cut into batches of `batch_size`, and left-padded to the smallest
bucket that fits, so a run compiles a handful of programs, not one per prompt.

The decoding settings travel together as one `Decoding` value (checked when it is made).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.models import backend
from oppu_jax.models.decoding import Decoding
from oppu_jax.models.interface import LanguageModel

Forward = Callable[..., tuple[jax.Array, Any]]


def generate(
    forward: Forward,
    prompts_tokens: Sequence[Sequence[int]],
    decoding: Decoding,
    *,
    init_cache: Callable[[int, int], Any],
    eos_id: int,
    pad_id: int,
    cache_batch_axis: int = 1,
    keep_order: bool = False,
    return_logprobs: bool = False,
    place: Callable[[jax.Array], jax.Array] | None = None,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
  """Generates a continuation of each prompt.

  init_cache: (batch, length) -> an empty cache pytree, e.g. `model.init_cache` (only its shapes
    and dtypes are used: the program starts from zeros).
  decoding: the method and its settings. Sampling: each prompt's draws depend only on the seed
    and the prompt's index, not on how prompts were batched. Beam: the cache's batch axis is
    `cache_batch_axis`; after the prefill each row r becomes rows r*num_beams ..
    r*num_beams+num_beams-1.
  keep_order: batches are consecutive runs of the prompts as given, instead of prompts sorted by
    length; for a forward whose row r must be prompt r of its batch (e.g. one adapter per row).
  place: if given, puts each batch-leading input (tokens, mask, keys) where it should live (e.g.
    rows split over a mesh's devices); the loops then run where their inputs are.
  Returns per prompt the generated ids, cut before the first EOS (EOS excluded). With
  return_logprobs (greedy/sample), also each token's log-probability under the model (before
  temperature and filtering).
  """
  _check_args(prompts_tokens, decoding, return_logprobs)
  d = decoding
  if not isinstance(forward, jax.tree_util.Partial):
    forward = jax.tree_util.Partial(forward)

  n = len(prompts_tokens)
  outputs: list[list[int]] = [[] for _ in range(n)]
  logprobs: list[list[float]] = [[] for _ in range(n)]
  base_key = jax.random.key(d.seed)
  # Fewer prompts than a batch: shrink the batch to a power of two, not to n (fewer programs).
  rows = min(d.batch_size, 1 << max(n - 1, 0).bit_length())
  lengths = [len(p) for p in prompts_tokens]
  for index, bucket in _plan_batches(lengths, rows, d.prompt_buckets, keep_order):
    tokens, mask = left_pad([prompts_tokens[i] for i in index], rows, bucket, pad_id)
    if place is not None:
      tokens, mask = place(tokens), place(mask)
    # Filler rows get a key too (an index no prompt has); their output is dropped.
    key_ids = np.array(list(index) + [2**32 - 1] * (rows - len(index)), np.uint32)
    keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(key_ids))
    keys = keys if place is None else place(keys)
    loop, args, static = _batch_program(forward, tokens, mask, keys, d, init_cache=init_cache,
                                        eos_id=eos_id, pad_id=pad_id,
                                        cache_batch_axis=cache_batch_axis)
    out = loop(*args, **static)
    if d.method == "beam":
      lps = None
    else:
      out, lps = out
      lps = np.asarray(lps)
    out = np.asarray(out)
    for row, i in enumerate(index):
      ids = out[row].tolist()
      end = ids.index(eos_id) if eos_id in ids else len(ids)
      outputs[i] = ids[:end]
      if lps is not None:
        logprobs[i] = lps[row, :end].tolist()
  return (outputs, logprobs) if return_logprobs else outputs


def trace_batch(forward: Forward, tokens, mask, decoding: Decoding, *, init_cache, eos_id: int,
                pad_id: int, cache_batch_axis: int = 1):
  """The decoding program of one batch (tokens, mask [B, P] left-padded, as `generate` makes
  them, or abstract), traced and not run: for `oppu_jax.compile_check`."""
  rows = getattr(tokens, "sharding", None)  # the keys go where their rows go
  if rows is not None:
    rows = jax.sharding.NamedSharding(rows.mesh, jax.sharding.PartitionSpec(*rows.spec[:1]))
  keys = jax.ShapeDtypeStruct((tokens.shape[0],), jax.random.key(0).dtype, sharding=rows)
  loop, args, static = _batch_program(forward, tokens, mask, keys, decoding,
                                      init_cache=init_cache, eos_id=eos_id, pad_id=pad_id,
                                      cache_batch_axis=cache_batch_axis)
  return loop.trace(*args, **static)


def _batch_program(forward, tokens, mask, keys, d: Decoding, *, init_cache, eos_id, pad_id,
                   cache_batch_axis):
  """(jitted loop, its arguments, its static keywords) for one batch of `generate`."""
  rows, bucket = tokens.shape
  cache_spec = cache_spec_of(init_cache, rows, bucket + d.max_new_tokens)
  special = jnp.int32(eos_id), jnp.int32(pad_id)
  if d.method == "beam":
    return _beam_search, (forward, tokens, mask, *special, jnp.float32(d.length_penalty)), dict(
        cache_spec=cache_spec, max_new_tokens=d.max_new_tokens, num_beams=d.num_beams,
        cache_batch_axis=cache_batch_axis)
  return _sample_loop, (forward, tokens, mask, *special, keys, jnp.float32(d.temperature)), dict(
      cache_spec=cache_spec, max_new_tokens=d.max_new_tokens, greedy=d.method == "greedy",
      top_k=d.top_k, top_p=float(d.top_p))


def make_forward(model: LanguageModel, place_state: Callable[[Any], Any] | None = None) -> Forward:
  """A generation `forward` for a plain model: its weights are the pytree's leaves, and logits are
  computed at the last input position only (the LM head over every prompt position is waste).
  place_state: if given, puts the weights where they should live (e.g. split over a mesh)."""
  graphdef, state = nnx.split(model)
  state = backend.frozen_base(state, model.config, model.weight_table())  # under "cpu": free uint16 views
  state = state if place_state is None else place_state(state)
  return jax.tree_util.Partial(_model_forward(graphdef), state)


@functools.cache
def _model_forward(graphdef):
  # Cached per graphdef, so every make_forward of the same architecture shares one function and
  # hence one compiled program.
  def forward(state, tokens, positions, attention_mask, cache, cache_index):
    model = nnx.merge(graphdef, state)
    hidden, cache = model(tokens, positions=positions, attention_mask=attention_mask,
                          cache=cache, cache_index=cache_index, return_hidden=True)
    return model.logits(hidden[:, -1]), cache

  return forward


# ----------------------------------------------------------------------------------------------
# Greedy and sampling


@functools.partial(
    jax.jit, static_argnames=("cache_spec", "max_new_tokens", "greedy", "top_k", "top_p"))
def _sample_loop(forward, tokens, mask, eos_id, pad_id, keys, temperature, *, cache_spec,
                 max_new_tokens, greedy, top_k, top_p):
  """tokens, mask: [B, P] left-padded; keys: [B] -> (ids [B, N], logprobs [B, N]); rows that
  hit EOS emit pad_id (log-prob 0) afterwards."""
  b, p = tokens.shape
  cache = empty_cache(cache_spec)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  lengths = mask.sum(axis=1)
  # Slots of tokens yet to come are open from the start: the causal rule hides them until written.
  slot_mask = jnp.concatenate([mask, jnp.ones((b, max_new_tokens), bool)], axis=1)

  def choose(logits, step):
    logits = last_logits(logits)
    logp = jax.nn.log_softmax(logits, axis=-1)
    if greedy:
      tok = jnp.argmax(logits, axis=-1)
    else:
      step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
      tok = jax.vmap(_sample_one, in_axes=(0, 0, None, None, None))(
          step_keys, logits, temperature, top_k, top_p)
    return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], axis=1)[:, 0]

  logits, cache = forward(tokens, positions, slot_mask, cache, 0)
  tok, lp = choose(logits, 0)
  out = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(tok)
  lps = jnp.zeros((b, max_new_tokens), jnp.float32).at[:, 0].set(lp)
  done = tok == eos_id

  def cond(state):
    step, _, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, out, lps, cache, done, prev = state
    logits, cache = forward(prev[:, None], (lengths + step - 1)[:, None], slot_mask, cache,
                            p + step - 1)
    tok, lp = choose(logits, step)
    tok = jnp.where(done, pad_id, tok)
    lp = jnp.where(done, 0.0, lp)
    out = jax.lax.dynamic_update_slice_in_dim(out, tok[:, None], step, axis=1)
    lps = jax.lax.dynamic_update_slice_in_dim(lps, lp[:, None], step, axis=1)
    return step + 1, out, lps, cache, done | (tok == eos_id), tok

  _, out, lps, _, _, _ = jax.lax.while_loop(cond, body, (1, out, lps, cache, done, tok))
  return out, lps


def _sample_one(key, logits, temperature, top_k: int, top_p: float):
  """One draw from logits [V] after temperature, top-k (0 = off) and nucleus top-p (1.0 = off)."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k <= 0 and top_p >= 1.0:
    return jax.random.categorical(key, logits)
  k = top_k if 0 < top_k < logits.shape[-1] else logits.shape[-1]
  values, ids = jax.lax.top_k(logits, k)  # sorted, best first
  if top_p < 1.0:
    probs = jax.nn.softmax(values)
    # Keep the smallest head whose mass reaches top_p: a token stays if the mass before it is
    # below top_p (the best token always stays), as transformers' TopPLogitsWarper.
    keep = (jnp.cumsum(probs) - probs) < top_p
    values = jnp.where(keep, values, -jnp.inf)
  return ids[jax.random.categorical(key, values)]


# ----------------------------------------------------------------------------------------------
# Beam search


@functools.partial(
    jax.jit, static_argnames=("cache_spec", "max_new_tokens", "num_beams", "cache_batch_axis"))
def _beam_search(forward, tokens, mask, eos_id, pad_id, length_penalty, *, cache_spec,
                 max_new_tokens, num_beams, cache_batch_axis):
  """tokens, mask: [B, P] left-padded -> the best finished beam's ids [B, N].

  A port of transformers' vectorised beam search (early_stopping=False): each step keeps the
  2*num_beams best continuations over all beams, continues the best num_beams that did not end,
  and files those among the top num_beams that ended (EOS, or the length limit) as finished with
  score sum(logprobs) / generated_length ** length_penalty.
  """
  b, p = tokens.shape
  nb, n = num_beams, max_new_tokens
  keep = 2 * nb
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  lengths = jnp.repeat(mask.sum(axis=1), nb)  # [B*nb]
  slot_mask = jnp.repeat(jnp.concatenate([mask, jnp.ones((b, n), bool)], axis=1), nb, axis=0)

  # Prefill once per prompt, then copy the cache to each beam.
  logits, cache = forward(tokens, positions, slot_mask[::nb], empty_cache(cache_spec), 0)
  logits = jnp.repeat(last_logits(logits), nb, axis=0)
  cache = jax.tree.map(lambda c: jnp.repeat(c, nb, axis=cache_batch_axis), cache)

  neg = jnp.float32(-1e9)
  state = dict(
      step=jnp.int32(0),
      logits=logits,
      cache=cache,
      running=jnp.full((b, nb, n), pad_id, jnp.int32),
      # Only beam 0 is live at first, so the beams do not all pick the same tokens.
      running_scores=jnp.zeros((b, nb), jnp.float32).at[:, 1:].set(neg),
      finished=jnp.full((b, nb, n), pad_id, jnp.int32),
      finished_scores=jnp.full((b, nb), neg),
      is_finished=jnp.zeros((b, nb), bool),
      improvable=jnp.ones((b, 1), bool),
      all_hit=jnp.bool_(False),
  )

  def cond(s):
    return (s["step"] < n) & jnp.any(s["improvable"]) & ~s["all_hit"]

  def body(s):
    step = s["step"]
    logp = jax.nn.log_softmax(s["logits"].astype(jnp.float32), axis=-1)  # [B*nb, V]
    vocab = logp.shape[-1]
    logp = logp.reshape(b, nb * vocab) + jnp.repeat(s["running_scores"], vocab, axis=1)
    top_lp, top_idx = jax.lax.top_k(logp, keep)  # [B, 2nb]
    src = top_idx // vocab
    tok = (top_idx % vocab).astype(jnp.int32)
    top_seqs = jnp.take_along_axis(s["running"], src[:, :, None], axis=1)
    top_seqs = jax.lax.dynamic_update_slice_in_dim(top_seqs, tok[:, :, None], step, axis=2)
    hits = (tok == eos_id) | (step + 1 >= n)

    # Continue the best num_beams that did not end.
    run_lp = top_lp + hits * neg
    _, nxt = jax.lax.top_k(run_lp, nb)
    running = jnp.take_along_axis(top_seqs, nxt[:, :, None], axis=1)
    running_scores = jnp.take_along_axis(run_lp, nxt, axis=1)
    beam_src = jnp.take_along_axis(src, nxt, axis=1)  # [B, nb]

    # File the ended ones among the top num_beams, if they beat what is filed.
    ended = hits & (jnp.arange(keep) < nb)[None, :]
    fin_lp = top_lp / ((step + 1).astype(jnp.float32) ** length_penalty)
    fin_lp = fin_lp + (~s["improvable"]) * neg + (~ended) * neg
    merged_scores = jnp.concatenate([s["finished_scores"], fin_lp], axis=1)
    _, best = jax.lax.top_k(merged_scores, nb)
    finished = jnp.take_along_axis(
        jnp.concatenate([s["finished"], top_seqs], axis=1), best[:, :, None], axis=1)
    finished_scores = jnp.take_along_axis(merged_scores, best, axis=1)
    is_finished = jnp.take_along_axis(
        jnp.concatenate([s["is_finished"], ended], axis=1), best, axis=1)

    # The best running beam, at its current length, cannot beat the worst filed one: stop.
    best_running = running_scores[:, :1] / ((step + 1).astype(jnp.float32) ** length_penalty)
    worst_filed = jnp.where(is_finished, finished_scores.min(axis=1, keepdims=True), neg)
    improvable = s["improvable"] & jnp.any(best_running > worst_filed, axis=-1, keepdims=True)

    # Reorder the cache to the surviving beams and run their last tokens. Each prompt's beams
    # are picked among its own (a gather along the beam axis, batched over prompts), so a cache
    # whose rows are split over devices stays where it is: a flat take over all rows made XLA
    # gather the whole cache onto every device at every step (compile_check showed it).
    cache = jax.tree.map(lambda c: _beams_from(c, beam_src, cache_batch_axis), s["cache"])
    last = jax.lax.dynamic_index_in_dim(running, step, axis=2, keepdims=False).reshape(-1)
    logits, cache = forward(last[:, None], (lengths + step)[:, None], slot_mask, cache, p + step)
    return dict(
        step=step + 1, logits=last_logits(logits), cache=cache, running=running,
        running_scores=running_scores, finished=finished, finished_scores=finished_scores,
        is_finished=is_finished, improvable=improvable, all_hit=jnp.all(hits),
    )

  s = jax.lax.while_loop(cond, body, state)
  return s["finished"][:, 0]


def _beams_from(c: jax.Array, beam_src: jax.Array, axis: int) -> jax.Array:
  """c with rows [B * nb] on `axis`; row r*nb + j becomes row r*nb + beam_src[r, j]."""
  b, nb = beam_src.shape
  split = c.reshape(c.shape[:axis] + (b, nb) + c.shape[axis + 1:])
  index = beam_src.reshape((1,) * axis + (b, nb) + (1,) * (c.ndim - axis - 1))
  return jnp.take_along_axis(split, index, axis=axis + 1).reshape(c.shape)


# ----------------------------------------------------------------------------------------------
# Host-side helpers


def cache_spec_of(init_cache, batch: int, length: int):
  """A hashable description of the empty cache, so the program builds it itself (no host
  allocation, no input buffer copied into the loop)."""
  shapes = jax.eval_shape(lambda: init_cache(batch, length))
  leaves, treedef = jax.tree.flatten(shapes)
  return treedef, tuple((leaf.shape, jnp.dtype(leaf.dtype).name) for leaf in leaves)


def empty_cache(spec):
  treedef, leaves = spec
  return jax.tree.unflatten(treedef, [jnp.zeros(shape, dtype) for shape, dtype in leaves])


def last_logits(logits: jax.Array) -> jax.Array:
  """[B, V] or [B, T, V] -> [B, V] f32 at the last position."""
  return (logits[:, -1] if logits.ndim == 3 else logits).astype(jnp.float32)


def _plan_batches(lengths: list[int], rows: int, buckets: Sequence[int], keep_order: bool):
  """Yields (prompt indices, bucket length) per batch; unless keep_order, similar lengths share a
  batch (less padding)."""
  order = list(range(len(lengths)))
  if not keep_order:
    order.sort(key=lambda i: -lengths[i])
  buckets = sorted(buckets)
  for start in range(0, len(order), rows):
    index = order[start:start + rows]
    longest = max(lengths[i] for i in index)
    fits = [bk for bk in buckets if bk >= longest]
    if not fits:
      raise ValueError(
          f"a prompt has {longest} tokens, more than the largest bucket ({buckets[-1]}); "
          "truncate it or pass larger prompt_buckets"
      )
    yield index, fits[0]


def left_pad(prompts: list[Sequence[int]], rows: int, length: int, pad_id: int):
  """-> tokens [rows, length] int32, mask [rows, length] bool. Filler rows (beyond the prompts)
  hold one real pad token, so no row is fully masked."""
  tokens = np.full((rows, length), pad_id, np.int32)
  mask = np.zeros((rows, length), bool)
  for r in range(rows):
    ids = prompts[r] if r < len(prompts) else [pad_id]
    tokens[r, length - len(ids):] = ids
    mask[r, length - len(ids):] = True
  return jnp.asarray(tokens), jnp.asarray(mask)


def _check_args(prompts, decoding: Decoding, return_logprobs):
  """What `Decoding` cannot check alone: the prompts, and what is asked of the method."""
  if any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  if decoding.method == "beam" and return_logprobs:
    raise ValueError("return_logprobs is for greedy and sample, not beam")
