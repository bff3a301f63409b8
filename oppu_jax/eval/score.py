"""Batched multi-user scoring of candidate answers: classification by the log-probability of each
label string (sampling up to 200 tokens, as the reference does, is slow and noisy), every row
under its own user's adapter.

One row = one (user, prompt ids). How the choices sit beside the prompt and how a row's choice
tokens are scored is the model's convention (`model.conventions.choice_layout` /
`choice_logprobs`: a decoder-only model packs prompt and choices into one tree-masked sequence,
an encoder-decoder encodes the prompt once and decodes the choices side by side); this module
batches the rows, runs them and sums the tokens of each choice.

Rows of a batch may belong to different users: the compiled function gathers the rows' adapters
from the stacked adapters (`UserAdapters.gather`) and vmaps the per-row scoring with the base
weights broadcast, never merging an adapter into the base.

Compilation happens on the host, in `Programs`: one executable per (architecture, method, input
shapes), so counting its entries counts compilations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.eval import base_state
from oppu_jax.models.interface import LanguageModel
from oppu_jax.peft.stack import UserAdapters

DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048)


def score_choices(
    model: LanguageModel,
    adapters: UserAdapters | None,
    rows: Sequence[tuple[int, Sequence[int]]],
    choices: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    stats: dict | None = None,
    programs: "Programs | None" = None,
    progress: Callable[[int], None] | None = None,
    mesh=None,
) -> np.ndarray:
  """Summed log-probabilities [n_rows, n_choices] (f32) of each choice's tokens after each prompt.

  adapters: the users' stacked adapters (their method inside), or None for the bare base.
  rows: (user_index, prompt ids) per row, as `model.conventions.query` makes them (a decoder-only
    prompt includes any BOS / chat template; an encoder input ends in EOS).
  choices: token ids of each candidate, shared by all rows, scored exactly as given
    (`model.conventions.choice` appends the EOS, so " 1" and " 10" are told apart).
  buckets: allowed lengths of a row's input (prompt + any packed choice tokens); one program per
    (length, batch_size).
  stats: if given, gets "compilations" (programs this call added to `programs`) and "batches".
  programs: the compiled programs to use and extend; pass the same one to several calls to share
    them (default: a fresh one for this call).
  progress: if given, called with the number of rows each batch finished.
  mesh: a (users, model) mesh of this process's devices: each batch's rows split over its users
    axis, the base weights over its model axis (sharding/mesh.py's rules), the adapters whole.
  """
  choices = [list(c) for c in choices]
  _check(adapters, rows, choices, batch_size)
  layout = model.conventions.choice_layout(choices)
  programs = Programs() if programs is None else programs
  graphdef, base, adapters, place = base_state.prepare(model, adapters, mesh)
  n = len(rows)
  size = min(batch_size, 1 << max(n - 1, 0).bit_length())
  # Rows of similar length share a batch (less padding); scores go back to the given order.
  order = sorted(range(n), key=lambda i: -len(rows[i][1]))
  out = np.zeros((n, len(choices)), np.float32)
  programs_before = len(programs)
  batches = 0
  for start in range(0, n, size):
    index = order[start:start + size]
    longest = max(len(rows[i][1]) for i in index)
    length = _bucket(longest + layout.extra, buckets)
    packed = layout.pack([rows[i] for i in index], size, length, model.config.pad_id)
    users = packed.pop("users")
    if place is not None:
      users, packed = place(users), {k: place(v) for k, v in packed.items()}
    token_logp = np.asarray(programs.run(graphdef, base, adapters, users, packed, layout.shared))
    out[index] = layout.totals(token_logp[:len(index)])
    batches += 1
    if progress is not None:
      progress(len(index))
  if stats is not None:
    stats["compilations"] = len(programs) - programs_before
    stats["batches"] = batches
  return out


class Programs:
  """The scorer's compiled executables, keyed by (model graph, input structure and shapes); the
  method is static inside the `UserAdapters` structure. `len()` counts them.

  Compiling happens here, on the host, through `jit(...).lower(...).compile()` (JAX keeps its own
  in-process cache of those, so a fresh `Programs` does not make XLA compile a shape again)."""

  def __init__(self):
    self._compiled: dict[Any, Any] = {}

  def __len__(self) -> int:
    return len(self._compiled)

  def run(self, graphdef, *args):
    """`_score_batch(graphdef, *args)`, compiling it first for a new key."""
    leaves, structure = jax.tree.flatten(args)
    key = (graphdef, structure, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))
    if key not in self._compiled:
      self._compiled[key] = _SCORE_BATCH.lower(graphdef, *args).compile()
    return self._compiled[key](*args)


def _score_batch(graphdef, base, adapters, users, packed, shared):
  """users [R]; packed: the rows' inputs [R, ...]; shared: the choices' arrays -> the rows'
  choice-token log-probs [R, ...] (`conventions.choice_logprobs`)."""
  method = None if adapters is None else adapters.method
  picked = None if adapters is None else adapters.gather(users)

  def one_row(adapter, row):
    model = nnx.merge(graphdef, base)
    return model.conventions.choice_logprobs(model, method, adapter, row, shared)

  return jax.vmap(one_row)(picked, packed)


_SCORE_BATCH = jax.jit(_score_batch, static_argnums=0)


def trace_batch(model: LanguageModel, adapters: UserAdapters | None, users: np.ndarray,
                packed: dict, shared: dict, mesh=None):
  """The scoring program of one batch (users [R], packed and shared as the layout's `pack` makes
  them), traced and not run, for a model that may be abstract and a mesh of devices this host
  may not have: for `oppu_jax.compile_check`."""
  graphdef, base, adapters, (users, packed), shared = base_state.trace_inputs(
      model, adapters, (users, packed), shared, mesh)
  return _SCORE_BATCH.trace(graphdef, base, adapters, users, packed, shared)


def _bucket(n: int, buckets: Sequence[int]) -> int:
  fits = [b for b in sorted(buckets) if b >= n]
  if not fits:
    raise ValueError(f"a prompt plus its choices needs {n} tokens, more than the largest bucket "
                     f"({max(buckets)}); truncate the prompt or pass larger buckets")
  return fits[0]


def _check(adapters, rows, choices, batch_size):
  if not choices or any(len(c) == 0 for c in choices):
    raise ValueError("need at least one choice, each with at least one token")
  if any(len(prompt) == 0 for _, prompt in rows):
    raise ValueError("every prompt needs at least one token (its last one predicts the choice)")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  base_state.check_users(adapters, rows)
