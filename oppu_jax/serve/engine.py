"""Continuous batching of personal models: requests of different users decode in one compiled
step, each row under its own user's adapter, a row freed the step its request ends.

The engine owns one thread. Each turn it admits waiting requests whose adapters are on device
(`residency.AdapterTiers`; a request whose adapter is still being read waits without holding
anyone up), prefills each admitted prompt alone (its first token chosen there), scores the
waiting label-scoring requests in one batch, and runs one decode step per pool of rows.

Pools (`pool.py`): rows whose prompts fit the same bucket share a cache and compiled programs;
a row decodes as it would in a batch of its own, at its own length. A prompt is prefilled alone
(batch 1), and a row's arithmetic depends on the width of its step, not on the other requests
in it (the tests check that a mixed batch gives each request its single-request output).
Sampling draws depend only on the request's seed and the token's index.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import threading
import time
from typing import Callable, Sequence

import jax
import numpy as np

from oppu_jax.eval import base_state, decode, score
from oppu_jax.serve.pool import Pool
from oppu_jax.serve.residency import AdapterTiers


class Overloaded(Exception):
  """Too many requests wait; `retry_after` seconds is a hint."""

  def __init__(self, waiting: int, retry_after: float):
    super().__init__(f"{waiting} requests are waiting; retry in {retry_after:.0f} s")
    self.retry_after = retry_after


class ShuttingDown(Exception):
  """The engine finishes what it has and takes nothing new."""


@dataclasses.dataclass
class Generate:
  """A completion: prompt ids (as the model reads them) under `user`'s adapter."""

  user: str
  prompt: Sequence[int]
  max_new_tokens: int
  temperature: float = 0.0  # 0: greedy
  top_p: float = 1.0
  seed: int = 0
  ignore_eos: bool = False  # run to max_new_tokens (load tests: a fixed length per request)


@dataclasses.dataclass
class Score:
  """Summed log-probabilities of each choice's ids after the prompt, under `user`'s adapter."""

  user: str
  prompt: Sequence[int]
  choices: tuple[tuple[int, ...], ...]


class Ticket:
  """A request in the engine. `listener(ticket, new ids or None when it ends)` is called from the
  engine's thread (keep it short); `wait` blocks until the request ends."""

  def __init__(self, request: Generate | Score, listener: Callable | None = None):
    self.request = request
    self.tokens: list[int] = []
    self.logprobs: list[float] = []
    self.scores: np.ndarray | None = None
    self.finish_reason: str | None = None  # stop, length, cancelled, error
    self.error: BaseException | None = None
    self.submitted = time.perf_counter()
    self._listener = listener
    self._done = threading.Event()
    self._cancelled = False

  @property
  def done(self) -> bool:
    return self._done.is_set()

  def wait(self, timeout: float | None = None) -> "Ticket":
    if not self._done.wait(timeout):
      raise TimeoutError(f"request not finished after {timeout} s")
    return self

  def _emit(self, ids):
    if self._listener is not None:
      self._listener(self, ids)

  def _finish(self, reason: str, error: BaseException | None = None):
    self.finish_reason, self.error = reason, error
    self._done.set()
    self._emit(None)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """slots: rows per pool (a decode step runs up to all of them); buckets: prompt lengths a pool pads to
  (a longer prompt is refused); max_new_tokens: the most a request may generate; max_waiting:
  requests waiting for a row before new ones are refused; prefills_per_turn: prompts prefilled
  between two decode steps (running requests keep moving while a burst arrives);
  one_user_per_step: admit only the user whose requests are running (the baseline that batches
  a user's own requests only); score_batch: rows per scoring batch."""

  slots: int = 32
  buckets: tuple[int, ...] = (32, 64, 128, 256, 512)
  max_new_tokens: int = 128
  max_waiting: int = 256
  prefills_per_turn: int = 2
  one_user_per_step: bool = False
  score_batch: int = 16


class Engine:
  """The serving loop over one base model and the users' adapters in `tiers`."""

  def __init__(self, model, tiers: AdapterTiers, config: EngineConfig, *, eos_id: int,
               pad_id: int):
    self.model, self.tiers, self.config = model, tiers, config
    self.eos_id, self.pad_id = eos_id, pad_id
    self._graphdef, self._base, _, _ = base_state.prepare(model, None)
    self._forward = decode.RowsForward(self._graphdef)
    self._n_virtual = decode.n_virtual(tiers.stack)
    self._pools: dict[int, Pool] = {}
    self._score_programs = score.Programs()
    self._inbox: collections.deque[Ticket] = collections.deque()
    self._waiting: collections.deque[Ticket] = collections.deque()
    self._wake = threading.Condition()
    self._stopping = False
    self._thread: threading.Thread | None = None
    self.stats = collections.Counter()  # steps, prefills, tokens, score_rows, finished

  # -- called from any thread ------------------------------------------------------------------

  def start(self) -> "Engine":
    self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
    self._thread.start()
    return self

  def submit(self, request: Generate | Score, listener: Callable | None = None) -> Ticket:
    """Queues a request; raises ValueError for one that can never run, Overloaded when too many
    wait, ShuttingDown after `stop`."""
    self._check(request)
    ticket = Ticket(request, listener)
    with self._wake:
      if self._stopping:
        raise ShuttingDown("the server is shutting down")
      waiting = len(self._inbox) + len(self._waiting)
      if waiting >= self.config.max_waiting:
        raise Overloaded(waiting, retry_after=1 + waiting / max(self.config.slots, 1))
      self._inbox.append(ticket)
      self._wake.notify()
    return ticket

  def cancel(self, ticket: Ticket) -> None:
    """Ends the request at the next turn; its row and adapter pin are freed."""
    with self._wake:
      ticket._cancelled = True
      self._wake.notify()

  def stop(self, timeout: float | None = None) -> None:
    """Takes no new requests, finishes those it has, then ends its thread."""
    with self._wake:
      self._stopping = True
      self._wake.notify()
    if self._thread is not None:
      self._thread.join(timeout)
    self.tiers.close()

  def load(self) -> dict:
    """Rows in use, requests waiting, adapters pinned (GET /health shows them)."""
    return {"running": sum(p.used() for p in self._pools.values()),
            "waiting": len(self._inbox) + len(self._waiting),
            "pinned_adapters": self.tiers.pinned()}

  def bucket_for(self, length: int) -> int:
    fits = [b for b in self.config.buckets if b >= length]
    if not fits:
      raise ValueError(f"the prompt has {length} tokens; this server takes at most "
                       f"{max(self.config.buckets)}")
    return fits[0]

  def _check(self, request):
    if not request.prompt:
      raise ValueError("the prompt is empty")
    self.bucket_for(len(request.prompt))
    if isinstance(request, Generate):
      if not 1 <= request.max_new_tokens <= self.config.max_new_tokens:
        raise ValueError(f"max_tokens must be 1..{self.config.max_new_tokens}, got "
                         f"{request.max_new_tokens}")
      if request.temperature < 0 or not 0 < request.top_p <= 1:
        raise ValueError("need temperature >= 0 and 0 < top_p <= 1")
    elif not request.choices or not all(request.choices):
      raise ValueError("every choice needs at least one token")

  # -- the engine's thread ---------------------------------------------------------------------

  def _run(self):
    while True:
      with self._wake:
        while self._inbox:
          self._waiting.append(self._inbox.popleft())
        stopping = self._stopping
      self._drop_cancelled()
      admitted = self._admit()
      scored = self._score()
      stepped = self._step()
      if stopping and not self._waiting and not any(p.used() for p in self._pools.values()):
        return
      if not (admitted or scored or stepped):
        with self._wake:  # nothing ran: wait for a request, a cancel, or an adapter read
          if not self._inbox and self._stopping == stopping:
            self._wake.wait(0.005 if self._waiting else 0.5)

  def _drop_cancelled(self):
    for ticket in [t for t in self._waiting if t._cancelled]:
      self._waiting.remove(ticket)
      ticket._finish("cancelled")
    for pool in self._pools.values():
      for row, ticket in enumerate(pool.tickets):
        if ticket is not None and ticket._cancelled:
          self._end_row(pool, row, "cancelled")

  def _admit(self) -> bool:
    """Prefills waiting completions whose adapter is on device and whose pool has a free row."""
    prefilled = 0
    for ticket in list(self._waiting):
      if prefilled >= self.config.prefills_per_turn:
        break
      request = ticket.request
      if not isinstance(request, Generate) or not self._may_run(request.user):
        continue
      pool = self._pool(self.bucket_for(len(request.prompt)))
      row = pool.free_row()
      if row is None:
        continue
      slot = self._acquire(ticket)
      if slot is None:
        continue
      self._waiting.remove(ticket)
      try:
        self._prefill(pool, row, ticket, slot)
      except Exception as e:  # a bug or a device error: this request fails, the server goes on
        logging.exception("prefill failed for a request of %s", request.user)
        self._fail_pool(pool, e, also=(ticket, slot))
      prefilled += 1
    return prefilled > 0

  def _may_run(self, user: str) -> bool:
    if not self.config.one_user_per_step:
      return True
    running = {t.request.user for p in self._pools.values() for t in p.tickets if t is not None}
    return not running or running == {user}

  def _acquire(self, ticket: Ticket) -> int | None:
    """The ticket's adapter slot, pinned; a read error ends the ticket."""
    try:
      return self.tiers.acquire(ticket.request.user)
    except Exception as e:  # a broken adapter file: that request fails, the server goes on
      self._waiting.remove(ticket)
      ticket._finish("error", e)
      return None

  def _prefill(self, pool: Pool, row: int, ticket: Ticket, slot: int):
    self.stats["prefills"] += 1
    tok = pool.prefill(self._rows_forward, row, ticket, slot, self.pad_id)
    self._emit_tokens(pool, {row: tok})

  def _step(self) -> bool:
    """One decode step per pool that has rows running."""
    stepped = False
    for pool in list(self._pools.values()):
      if pool.used():
        self.stats["steps"] += 1
        try:
          self._emit_tokens(pool, pool.step(self._rows_forward))
        except Exception as e:  # its requests fail; the other pools and new requests go on
          logging.exception("a decode step failed; its %d requests end with an error",
                            pool.used())
          self._fail_pool(pool, e)
        stepped = True
    return stepped

  def _fail_pool(self, pool: Pool, error: Exception, also=None):
    """Ends every request of `pool` (and `also`, a (ticket, slot) not yet in a row) with `error`
    and drops the pool: its cache may have been donated to the failed program."""
    for row, ticket in enumerate(pool.tickets):
      if ticket is not None:
        self.tiers.release(pool.slots[row])
        pool.free(row)
        ticket._finish("error", error)
    if also is not None and not also[0].done:
      self.tiers.release(also[1])
      also[0]._finish("error", error)
    self._pools = {b: p for b, p in self._pools.items() if p is not pool}

  def _rows_forward(self, users: jax.Array):
    """generate's forward for rows under the device slots `users` (the stack as it is now)."""
    return jax.tree_util.Partial(self._forward, self._base, self.tiers.stack, users)

  def _emit_tokens(self, pool: Pool, new: dict[int, tuple[int, float]]):
    """Appends each row's new token (or ends the row on EOS / its length)."""
    for row, (tok, lp) in new.items():
      ticket = pool.tickets[row]
      if tok == self.eos_id and not ticket.request.ignore_eos:
        self._end_row(pool, row, "stop")
        continue
      ticket.tokens.append(tok)
      ticket.logprobs.append(lp)
      pool.steps[row] += 1
      self.stats["tokens"] += 1
      ticket._emit([tok])
      if len(ticket.tokens) >= ticket.request.max_new_tokens:
        self._end_row(pool, row, "length")

  def _end_row(self, pool: Pool, row: int, reason: str):
    ticket = pool.tickets[row]
    self.tiers.release(pool.slots[row])
    pool.free(row)
    self.stats["finished"] += 1
    ticket._finish(reason)

  def _score(self) -> bool:
    """Scores waiting label-scoring requests whose adapters are on device, in one batch per set
    of choices."""
    taken: dict[tuple, list[tuple[Ticket, int]]] = collections.defaultdict(list)
    for ticket in list(self._waiting):
      if not isinstance(ticket.request, Score) or not self._may_run(ticket.request.user):
        continue
      if sum(map(len, taken.values())) >= self.config.score_batch:
        break
      slot = self._acquire(ticket)
      if slot is not None:
        self._waiting.remove(ticket)
        taken[ticket.request.choices].append((ticket, slot))
    for choices, group in taken.items():
      rows = [(slot, list(t.request.prompt)) for t, slot in group]
      try:
        scores = score.score_choices(self.model, self.tiers.stack, rows, choices,
                                     batch_size=self.config.score_batch,
                                     programs=self._score_programs)
      except Exception as e:  # e.g. a prompt too long for the scoring buckets
        scores = e
      for i, (ticket, slot) in enumerate(group):
        self.tiers.release(slot)
        self.stats["score_rows"] += 1
        if isinstance(scores, Exception):
          ticket._finish("error", scores)
        else:
          ticket.scores = scores[i]
          ticket._finish("stop")
    return bool(taken)

  def _pool(self, bucket: int) -> Pool:
    if bucket not in self._pools:
      c = self.config
      init = functools.partial(self.model.conventions.decode_cache, self.model, self._n_virtual,
                               c.max_new_tokens)
      self._pools[bucket] = Pool(bucket, c.slots, c.max_new_tokens, init)
    return self._pools[bucket]
