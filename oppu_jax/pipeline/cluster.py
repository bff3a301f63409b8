"""Which process does what in a multi-process run (TPU pod slices, GPU clusters, and here several
local CPU processes): JAX's multi-controller runtime, every process running the same program.

Every process runs every stage; what differs is which part of the work it owns:
- task adaptation is one data-parallel job over the global mesh (all processes step together);
- the per-user stage, evaluation and PAG profiles split the users between processes (`share`),
  and each process works through its share on its own devices, the local rows of the global
  mesh's users axis: no process waits on another's slot refills (users are independent);
- files: a user's adapter is written by the process that trained it, a process's share of
  predictions or profiles into a part file; process 0 alone writes what is one file for the
  whole run (config.json, data, merged predictions, results) after a barrier.
One process needs none of this: `share` gives it everything and barriers return at once.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import Callable, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh

from oppu_jax import storage
from oppu_jax.errors import ConfigError
from oppu_jax.sharding import mesh as mesh_lib

T = TypeVar("T")
EVERY_PROCESS = "every_process"  # a log record's attribute: log it in every process


def initialize(config) -> None:
  """jax.distributed.initialize from config.distributed or the environment. On Cloud TPU (and
  SLURM) JAX finds the coordinator, the process count and the id itself; elsewhere they come from
  the config keys or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID. On CPU the
  collectives go through gloo (must be chosen before the first device is made)."""
  d = config.distributed
  coordinator = d.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num = d.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", 0)) or None
  pid = d.process_id if d.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", -1))
  pid = None if pid < 0 else pid
  if not (d.enabled or coordinator or num):
    return
  if (coordinator or num or pid is not None) and None in (coordinator, num, pid):
    raise ConfigError(
        "config.distributed: give coordinator, num_processes and process_id together (or "
        "$JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID), or none of them on a "
        f"platform JAX detects (Cloud TPU, SLURM); got {coordinator!r}, {num!r}, {pid!r}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num, pid,
                             heartbeat_timeout_seconds=d.heartbeat_timeout_seconds)
  logging.info("process %d of %d: %d local devices of %d (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


def index() -> int:
  return jax.process_index()


def count() -> int:
  return jax.process_count()


def is_main() -> bool:
  """Process 0: writes the run's shared files and logs the run."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (files written before it are seen by all
  after it, on a shared filesystem)."""
  if count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
    storage.pull()  # a workdir on an object store: what the others pushed before the barrier


def share(items: Sequence[T], cost: Callable[[T], float] = lambda _: 1.0) -> list[T]:
  """This process's items, in their given order. The split is the same in every process: items by
  decreasing cost (ties: given order), each to the process with the least cost so far, so a
  process's share is balanced by work (training steps, queries), not by count."""
  if count() == 1:
    return list(items)
  load = np.zeros(count())
  mine = set()
  for i in sorted(range(len(items)), key=lambda i: (-cost(items[i]), i)):
    owner = int(np.argmin(load))
    load[owner] += cost(items[i])
    if owner == index():
      mine.add(i)
  return [item for i, item in enumerate(items) if i in mine]


def log_share(what: str, ids: Sequence[str]) -> None:
  """One line per process naming its share (the only INFO line a process other than 0 logs)."""
  shown = ", ".join(ids[:12]) + (f", ... ({len(ids)})" if len(ids) > 12 else "")
  logging.info("process %d/%d: %s %d users: %s", index(), count(), what, len(ids),
               shown or "none", extra={EVERY_PROCESS: True})


def quiet_other_processes(record: logging.LogRecord) -> bool:
  """A logging filter: process 0 logs the run; the others only their shares and warnings."""
  return is_main() or record.levelno >= logging.WARNING or getattr(record, EVERY_PROCESS, False)


def part_path(path: str) -> str:
  """Where this process writes its share of a file all processes contribute to."""
  return f"{path}.part-{index()}-of-{count()}"


def part_paths(path: str) -> list[str]:
  return [f"{path}.part-{i}-of-{count()}" for i in range(count())]


def joined_parts(path: str) -> dict:
  """The JSON objects every process wrote to its part of `path`, merged (process 0, after the
  barrier that follows the writing)."""
  joined = {}
  for p in part_paths(path):
    with open(p) as f:
      joined.update(json.load(f))
  return joined


def remove_parts(path: str) -> None:
  """Deletes the parts of `path` (of any process count), here and in the store, once joined."""
  for p in glob.glob(f"{path}.part-*"):
    storage.remove(p)
    os.remove(p)


def meshes(users: int, model: int) -> tuple[Mesh | None, Mesh | None]:
  """(global, local) meshes of config.mesh's shape: the global (users, model) mesh over every
  device of every process, and this process's rows of it (its own devices, the model axis whole
  within the process: a model split across hosts would make every per-user step a cross-host
  collective). users=-1 takes all the devices; of several processes, the default 1 does too (one
  device cannot be the mesh of several processes). None where one device is the whole mesh."""
  if count() > 1 and users == 1:
    users = -1
  if users == 1 and model == 1:
    return None, None
  devices = jax.local_devices()
  if len(devices) % model:
    raise ConfigError(f"config.mesh.model={model} does not divide this process's "
                      f"{len(devices)} devices; the model axis must lie within one process")
  if users != -1 and users % count():
    raise ConfigError(f"config.mesh.users={users} is not a multiple of the {count()} processes")
  local_users = len(devices) // model if users == -1 else users // count()
  try:
    world = mesh_lib.make_mesh(users, model)
    local = mesh_lib.make_mesh(local_users, model, devices)
  except ValueError as e:
    raise ConfigError(f"config.mesh: {e}") from None
  return world, local
