"""Who owns what of several processes: the split of users, the part files, the meshes, the
start-up's errors (one process here; other process ids are simulated)."""

import ml_collections
import pytest

from oppu_jax import config as config_lib
from oppu_jax.errors import ConfigError
from oppu_jax.pipeline import cluster


def _as_process(monkeypatch, index: int, count: int) -> None:
  monkeypatch.setattr(cluster, "index", lambda: index)
  monkeypatch.setattr(cluster, "count", lambda: count)


@pytest.mark.parametrize("count", [2, 3])
def test_shares_cover_every_item_once_balanced_by_cost(monkeypatch, count):
  items = list(range(11))
  cost = lambda i: 1 + (i * 7) % 5
  shares = []
  for index in range(count):
    _as_process(monkeypatch, index, count)
    shares.append(cluster.share(items, cost))
  assert sorted(sum(shares, [])) == items
  assert all(s == sorted(s) for s in shares)  # each share keeps the given order
  loads = [sum(cost(i) for i in s) for s in shares]
  assert max(loads) - min(loads) <= max(cost(i) for i in items)  # greedy: within one item


def test_one_process_owns_everything_and_writes_no_parts():
  assert cluster.share([3, 1, 2]) == [3, 1, 2]
  assert cluster.count() == 1 and cluster.is_main()
  cluster.barrier("no-op")  # returns at once


def test_part_paths_name_the_process(monkeypatch):
  _as_process(monkeypatch, 1, 2)
  assert cluster.part_path("w/p.json") == "w/p.json.part-1-of-2"
  assert cluster.part_paths("w/p.json") == ["w/p.json.part-0-of-2", "w/p.json.part-1-of-2"]


def test_meshes_of_one_process():
  assert cluster.meshes(1, 1) == (None, None)
  world, local = cluster.meshes(-1, 1)
  assert world.devices.size == local.devices.size  # one process: its devices are all of them
  with pytest.raises(ConfigError, match="config.mesh.model=3 does not divide"):
    cluster.meshes(-1, 3)


def _distributed(**changes) -> ml_collections.ConfigDict:
  c = config_lib.get_config()
  c.distributed.update(changes)
  return c


def test_initialize_needs_all_three_or_none(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  cluster.initialize(_distributed())  # not enabled: nothing happens
  with pytest.raises(ConfigError, match="config.distributed: give coordinator, num_processes"):
    cluster.initialize(_distributed(coordinator="127.0.0.1:1234"))
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  with pytest.raises(ConfigError, match="got None, 2, None"):
    cluster.initialize(_distributed())
