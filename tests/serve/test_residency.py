"""Adapter tiers: a user's adapter reaches a device slot after its read, pinned slots are never
evicted, the least recently used unpinned one is, and the host tier keeps at most its capacity."""

import time

import numpy as np
import pytest

from oppu_jax.serve.residency import AdapterTiers


class _Method:  # UserAdapters keeps the method as static metadata only
  name = "fake"


def _adapter(user: str):
  return {"w": np.full((2, 3), float(int(user[1:])), np.float32)}


def _acquire(tiers, user, timeout=10.0):
  """Asks until the user's slot is ready (its read runs on a background thread)."""
  deadline = time.time() + timeout
  while (slot := tiers.acquire(user)) is None:
    assert time.time() < deadline, f"{user} never became resident"
    time.sleep(0.005)
  return slot


def _tiers(reads, device_slots=2, host_capacity=3):
  def read(user):
    reads.append(user)
    return _adapter(user)
  return AdapterTiers(_Method(), _adapter("u0"), read, device_slots=device_slots,
                      host_capacity=host_capacity)


def test_a_users_adapter_reaches_its_device_slot():
  reads = []
  tiers = _tiers(reads)
  slot = _acquire(tiers, "u7")
  np.testing.assert_array_equal(np.asarray(tiers.stack.tree["w"][slot]), _adapter("u7")["w"])
  assert tiers.acquire("u7") == slot and reads == ["u7"]  # a device hit: no second read
  tiers.close()


def test_pinned_slots_stay_and_the_least_recently_used_one_goes():
  reads = []
  tiers = _tiers(reads)
  a, b = _acquire(tiers, "u1"), _acquire(tiers, "u2")
  deadline = time.time() + 10
  while "u3" not in tiers._host and time.time() < deadline:  # read, but no slot to go to
    assert tiers.acquire("u3") is None
    time.sleep(0.005)
  assert tiers.acquire("u3") is None  # both slots pinned: u3 waits in host memory
  tiers.release(a)
  c = _acquire(tiers, "u3")
  assert c == a  # u1's slot, the only unpinned one
  np.testing.assert_array_equal(np.asarray(tiers.stack.tree["w"][b]), _adapter("u2")["w"])
  tiers.release(b)
  tiers.release(c)
  _acquire(tiers, "u1")  # from the host tier: no new read
  assert reads == ["u1", "u2", "u3"]
  assert tiers.pinned() == 1
  tiers.close()


def test_the_host_tier_keeps_its_capacity():
  reads = []
  tiers = _tiers(reads, device_slots=1, host_capacity=2)
  for user in ["u1", "u2", "u3", "u1"]:  # u1 fell out of the host LRU: read again
    tiers.release(_acquire(tiers, user))
  assert reads == ["u1", "u2", "u3", "u1"]
  tiers.close()


def test_bad_sizes_are_refused():
  with pytest.raises(ValueError, match="device_slots"):
    AdapterTiers(_Method(), _adapter("u0"), _adapter, device_slots=0, host_capacity=1)
