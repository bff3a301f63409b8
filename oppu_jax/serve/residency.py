"""Where a user's adapter lives while the server runs: three tiers, the way multi-LoRA servers
keep thousands of adapters on one base (S-LoRA's unified pool, vLLM's LoRA slots).

- device: a fixed number of slots, one `UserAdapters` stack the decode step gathers rows from;
  a slot is pinned while a request uses it and otherwise evicted least recently used;
- host: an LRU of adapters read from disk (numpy pytrees);
- files: the workdir's HF PEFT directories, read on a background thread, so a user whose adapter
  is on disk never holds up the steps of requests whose adapters are resident.

Only the engine's thread calls `acquire` / `release` (no lock: one owner).
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.peft.stack import UserAdapters


class AdapterTiers:
  """device slots <- host LRU <- files, for users whose adapters share one method and shape.

  read(user) -> the user's adapter as a host pytree (it raises for a broken file; the error goes
  to the requests of that user). like: one adapter of the right structure and dtypes (only its
  shapes are read: the free slots hold zeros).
  """

  def __init__(self, method, like: Any, read: Callable[[str], Any], *, device_slots: int,
               host_capacity: int, readers: int = 4):
    if device_slots < 1 or host_capacity < 1:
      raise ValueError(f"need device_slots >= 1 and host_capacity >= 1, got {device_slots}, "
                       f"{host_capacity}")
    self.stack = UserAdapters.like(method, like, device_slots)
    self._read = read
    # Several readers: one slow file does not queue the reads of other users behind it.
    self._reader = concurrent.futures.ThreadPoolExecutor(readers, thread_name_prefix="adapter-read")
    self._slot_of: dict[str, int] = {}
    self._user_in: list[str | None] = [None] * device_slots
    self._pins = [0] * device_slots
    self._recent: collections.OrderedDict[int, None] = collections.OrderedDict(
        (s, None) for s in range(device_slots))  # least recently used first
    self._host: collections.OrderedDict[str, Any] = collections.OrderedDict()
    self._host_capacity = host_capacity
    self._reading: dict[str, concurrent.futures.Future] = {}
    self.counts = collections.Counter()  # device hits, uploads, file reads (for the stats)

  @property
  def device_slots(self) -> int:
    return len(self._user_in)

  def acquire(self, user: str) -> int | None:
    """The device slot holding `user`'s adapter, pinned until `release`; None while it is being
    read or every slot is pinned (ask again later). Raises what reading the user's file raised."""
    slot = self._slot_of.get(user)
    if slot is not None:
      self.counts["device_hits"] += 1
      return self._pin(slot)
    adapter = self._from_host(user)
    if adapter is None:
      return None
    slot = self._free_slot()
    if slot is None:
      return None
    old = self._user_in[slot]
    if old is not None:
      del self._slot_of[old]
    self.stack = _put(self.stack, jnp.int32(slot), jax.tree.map(jnp.asarray, adapter))
    self._user_in[slot], self._slot_of[user] = user, slot
    self.counts["uploads"] += 1
    return self._pin(slot)

  def release(self, slot: int) -> None:
    self._pins[slot] -= 1

  def pinned(self) -> int:
    return sum(p > 0 for p in self._pins)

  def close(self) -> None:
    self._reader.shutdown(wait=False, cancel_futures=True)

  def _pin(self, slot: int) -> int:
    self._pins[slot] += 1
    self._recent.move_to_end(slot)
    return slot

  def _from_host(self, user: str):
    """The user's host copy, or None after starting (or while waiting for) its read."""
    if user in self._host:
      self._host.move_to_end(user)
      return self._host[user]
    future = self._reading.get(user)
    if future is None:
      self._reading[user] = self._reader.submit(self._read, user)
      self.counts["file_reads"] += 1
      return None
    if not future.done():
      return None
    del self._reading[user]
    adapter = future.result()  # a read error is raised to the caller (and read again next time)
    self._host[user] = adapter
    while len(self._host) > self._host_capacity:
      self._host.popitem(last=False)
    return adapter

  def _free_slot(self) -> int | None:
    """An empty slot, else the least recently used unpinned one; None if all are pinned."""
    for slot in self._recent:
      if self._user_in[slot] is None:
        return slot
    return next((s for s in self._recent if self._pins[s] == 0), None)


@functools.partial(jax.jit, donate_argnums=0)
def _put(stack: UserAdapters, slot, adapter) -> UserAdapters:
  """The stack with `slot` replaced, in place (the old stack's buffers are donated)."""
  return stack.set_user(slot, adapter)


def host_adapter(adapter: Any) -> Any:
  """An adapter as the host tier keeps it (numpy, f32 as saved)."""
  return jax.tree.map(np.asarray, adapter)
