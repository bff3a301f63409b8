"""Batched multi-user scoring of candidate answers: classification by the log-probability of each
label string (sampling up to 200 tokens, as the reference does, is slow and noisy), every row
under its own user's adapter.

One row = one (user, prompt). The prompt and ALL the choices go into ONE sequence with a tree
attention mask, so the prompt is run once however many labels there are:

  [pad ... pad | prompt | c1[:-1] | c2[:-1] | ...]      (left-padded to a bucket length T)

Each choice's tokens attend to the prompt and to the earlier tokens of the same choice only, and
their positions continue from the prompt's end, so every choice sees exactly what it would see
appended alone. A choice's last token is never an input (nothing after it is scored), so it is
left out; a one-token label costs no extra sequence slot. Logits are computed only at the
positions that predict choice tokens (the LM head over the prompt is waste).

Rows of a batch may belong to different users: the compiled function gathers the rows' adapters
from the stacked adapters (`UserAdapters.gather`) and vmaps the per-row forward with the base
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

from oppu_jax.models import backend
from oppu_jax.models.llama import Llama
from oppu_jax.peft import apply
from oppu_jax.peft.stack import UserAdapters
from oppu_jax.train import mesh as mesh_lib

DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048)


def score_choices(
    model: Llama,
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
  rows: (user_index, prompt_tokens) per row; the prompt includes any BOS / chat template.
  choices: token ids of each candidate, shared by all rows, scored exactly as given: append the
    EOS to each choice if the score should also say "and the answer ends here" (without it, " 1"
    and " 10" are not told apart by " 1"'s score).
  buckets: allowed packed lengths T (prompt + choice tokens); one program per (T, batch_size).
  stats: if given, gets "compilations" (programs this call added to `programs`) and "batches".
  programs: the compiled programs to use and extend; pass the same one to several calls to share
    them (default: a fresh one for this call).
  progress: if given, called with the number of rows each batch finished.
  mesh: a (users, model) mesh of this process's devices: each batch's rows split over its users
    axis, the base weights over its model axis (train/mesh.py's rules), the adapters whole.
  """
  choices = [list(c) for c in choices]
  _check(adapters, rows, choices, batch_size)
  plan = _Plan(choices)
  programs = Programs() if programs is None else programs
  graphdef, base = nnx.split(model)
  base = backend.frozen_base(base, model.config)  # CPU: bf16 stacks as free uint16 views
  adapters = None if adapters is None else jax.tree.map(jnp.asarray, adapters)
  if mesh is not None:
    base = mesh_lib.shard_base(base, mesh, model.weight_table())
    adapters = mesh_lib.put(adapters, mesh_lib.replicated(mesh))
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
    length = _bucket(longest + plan.extra, buckets)
    users, tokens, mask, positions = _pack(
        [rows[i] for i in index], size, length, plan, pad_id=model.config.pad_id)
    if mesh is not None:
      users, tokens, mask, positions = map(mesh_lib.rows_placer(mesh),
                                           (users, tokens, mask, positions))
    token_logp = np.asarray(programs.run(graphdef, base, adapters, users, tokens, mask,
                                         positions, plan.segment, plan.source, plan.target))
    # Sum each choice's token log-probs: [R, C] @ [C, n_choices].
    out[index] = token_logp[:len(index)] @ plan.owner_onehot
    batches += 1
    if progress is not None:
      progress(len(index))
  if stats is not None:
    stats["compilations"] = len(programs) - programs_before
    stats["batches"] = batches
  return out


class _Plan:
  """Where the choices sit in the packed tail and which hidden state predicts which token.

  extra: tail length; segment: [extra] choice index of each tail slot; source: [C] offset of the
  predicting state relative to the tail start (-1 = the last prompt token); target: [C] the
  token predicted; owner_onehot: [C, n_choices] its choice. C = total choice tokens.
  """

  def __init__(self, choices: list[list[int]]):
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
    self.segment = np.asarray(segment, np.int32)
    self.source = np.asarray(source, np.int32)
    self.target = np.asarray(target, np.int32)
    self.owner_onehot = np.eye(len(choices), dtype=np.float32)[owner]  # [C, n_choices]
    self.starts = np.zeros(self.extra, np.int32)  # offset of each tail slot within its choice
    for s in range(1, self.extra):
      if self.segment[s] == self.segment[s - 1]:
        self.starts[s] = self.starts[s - 1] + 1


class Programs:
  """The scorer's compiled executables, keyed by (model graph, input structure and shapes); the
  method is static inside the `UserAdapters` structure. `len()` counts them.

  Compiling happens here, on the host, through `jit(...).lower(...).compile()` (JAX keeps its own
  in-process cache of those, so a fresh `Programs` does not make XLA compile a shape again)."""

  def __init__(self, program=None):
    """program: the jitted batch function (graphdef static first); default `_score_batch`."""
    self._program = program
    self._compiled: dict[Any, Any] = {}

  def __len__(self) -> int:
    return len(self._compiled)

  def run(self, graphdef, *args):
    """`_score_batch(graphdef, *args)`, compiling it first for a new key."""
    leaves, structure = jax.tree.flatten(args)
    key = (graphdef, structure, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))
    if key not in self._compiled:
      self._compiled[key] = (self._program or _SCORE_BATCH).lower(graphdef, *args).compile()
    return self._compiled[key](*args)


def _score_batch(graphdef, base, adapters, users, tokens, mask, positions, segment, source,
                 target):
  """users [R]; tokens, positions [R, T]; mask [R, T] (real slots); segment [E] (E = tail length,
  the tail is the last E slots); source, target [C] -> log-probs of the choice tokens [R, C]."""
  t = tokens.shape[1]
  e = segment.shape[0]
  prompt_end = t - e  # the tail starts here; the last prompt token is at prompt_end - 1
  # seg[k] = -1 on prompt slots, else the choice owning the tail slot.
  seg = jnp.concatenate([jnp.full((prompt_end,), -1, jnp.int32), segment])
  slots = jnp.arange(t)
  same_branch = (seg[None, :] == -1) | (seg[None, :] == seg[:, None])  # key is prompt or kin
  tree = (slots[None, :] <= slots[:, None]) & same_branch  # [T, T]
  gather = jnp.where(source < 0, prompt_end - 1, prompt_end + source)  # [C]
  method = None if adapters is None else adapters.method
  picked = None if adapters is None else adapters.gather(users)

  def one_row(adapter, toks, msk, pos):
    model = nnx.merge(graphdef, base)
    full = (tree & msk[None, :])[None]  # [1, T, T]
    hidden = apply.forward(model, method, adapter, toks[None], pos[None], full,
                           return_hidden=True)[0]  # [T, D]
    logits = model.logits(jnp.take(hidden, gather, axis=0))  # [C, V]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, target[:, None], axis=1)[:, 0]  # [C]

  return jax.vmap(one_row)(picked, tokens, mask, positions)  # [R, C]


_SCORE_BATCH = jax.jit(_score_batch, static_argnums=0)


def _pack(rows, size: int, length: int, plan: _Plan, *, pad_id: int):
  """-> users [size], tokens / mask / positions [size, length] as numpy; filler rows beyond the
  real ones are user 0 with a one-token prompt."""
  users = np.zeros(size, np.int32)
  tokens = np.full((size, length), pad_id, np.int32)
  mask = np.zeros((size, length), bool)
  positions = np.zeros((size, length), np.int32)
  prompt_end = length - plan.extra
  tokens[:, prompt_end:] = plan.tail
  mask[:, prompt_end:] = True
  for r in range(size):
    user, prompt = rows[r] if r < len(rows) else (0, [pad_id])
    p = len(prompt)
    users[r] = user
    tokens[r, prompt_end - p:prompt_end] = prompt
    mask[r, prompt_end - p:prompt_end] = True
    positions[r, prompt_end - p:prompt_end] = np.arange(p)
    positions[r, prompt_end:] = p + plan.starts
  return users, tokens, mask, positions


def _bucket(n: int, buckets: Sequence[int]) -> int:
  fits = [b for b in sorted(buckets) if b >= n]
  if not fits:
    raise ValueError(f"a prompt plus its choices needs {n} tokens, more than the largest bucket "
                     f"({max(buckets)}); truncate the prompt or pass larger buckets")
  return fits[0]


def _check(adapters, rows, choices, batch_size):
  if adapters is not None and not isinstance(adapters, UserAdapters):
    raise TypeError(f"adapters: a UserAdapters or None, got {type(adapters).__name__}")
  if not choices or any(len(c) == 0 for c in choices):
    raise ValueError("need at least one choice, each with at least one token")
  if any(len(prompt) == 0 for _, prompt in rows):
    raise ValueError("every prompt needs at least one token (its last one predicts the choice)")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if adapters is not None and rows:
    n_users = adapters.num_users
    bad = [u for u, _ in rows if not 0 <= u < n_users]
    if bad:
      raise ValueError(f"user index {bad[0]} out of range for {n_users} stacked adapters")
