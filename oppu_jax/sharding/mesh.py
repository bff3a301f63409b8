"""Device mesh and the one table that maps logical axis names onto mesh axes.

Mesh axes: `users` (adapters, optimizer states and per-user batches are split along their
leading user axis) and `model` (base weights may be split along heads / MLP / vocab). A base
weight's logical axes come from its family's weight table (`models/weights.py`). Changing the
parallelism is a config change: the mesh shape and, if needed, `RULES`.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from oppu_jax.models.weights import WeightTable

# Logical axis name -> mesh axis (None = replicated).
RULES = {
    "users": "users",
    "layers": None,
    "embed": None,
    "heads": "model",
    "kv_heads": "model",
    "mlp": "model",
    "vocab": "model",
}


def make_mesh(users: int = -1, model: int = 1, devices=None) -> Mesh:
  """A (users, model) mesh over the devices; users=-1 takes all the devices model leaves."""
  devices = list(devices if devices is not None else jax.devices())
  if users == -1:
    users = len(devices) // model
  if users * model != len(devices):
    raise ValueError(
        f"mesh.users x mesh.model = {users} x {model} does not match {len(devices)} devices")
  return Mesh(np.array(devices).reshape(users, model), ("users", "model"))


def spec(logical: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """Logical axes -> PartitionSpec; a dimension the mesh axis does not divide stays whole (logged
  once per kind: a replicated dimension costs memory on every device of that axis)."""
  axes = []
  for name, size in zip(logical, shape):
    mesh_axis = RULES.get(name) if name else None
    if mesh_axis is not None and size % mesh.shape[mesh_axis] != 0:
      _log_replicated(name, size, mesh_axis, mesh.shape[mesh_axis])
      mesh_axis = None
    axes.append(mesh_axis)
  return PartitionSpec(*axes)


_logged: set[tuple] = set()


def _log_replicated(name: str, size: int, mesh_axis: str, devices: int) -> None:
  if (name, size, mesh_axis, devices) not in _logged:
    _logged.add((name, size, mesh_axis, devices))
    logging.info("mesh: logical axis %r of size %d is not divisible by mesh axis %r (%d devices):"
                 " replicated, whole on every device", name, size, mesh_axis, devices)


def shard_base(state: nnx.State, mesh: Mesh, table: WeightTable) -> nnx.State:
  """Places the base weights on the mesh by their logical axes in the model's weight table
  (`model.weight_table()`) and RULES (a copy per device only where the rules replicate)."""
  axes = {w.path: w.full_axes for w in table.weights}
  pure = nnx.to_pure_dict(state)
  placed = jax.tree_util.tree_map_with_path(
      lambda path, leaf: put(leaf, NamedSharding(mesh, spec(axes[_keys(path)], leaf.shape, mesh))),
      pure)
  nnx.replace_by_pure_dict(state, placed)
  return state


def users_sharding(mesh: Mesh) -> NamedSharding:
  """For any array whose leading axis is the users axis (the rest replicated)."""
  return NamedSharding(mesh, PartitionSpec("users"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def rows_sharding(mesh: Mesh, shape: tuple[int, ...], axis: int) -> NamedSharding:
  """Data parallelism: dimension `axis` (a batch's rows) split over the users axis, whole where
  the axis does not divide it."""
  logical = [None] * len(shape)
  logical[axis] = "users"
  return NamedSharding(mesh, spec(tuple(logical), shape, mesh))


def rows_placer(mesh: Mesh):
  """x -> x placed with its rows (leading axis) split over the users axis: a batch's rows in
  evaluation and generation."""
  return lambda x: put(x, rows_sharding(mesh, x.shape, 0))


def put(tree, sharding: NamedSharding):
  """Places host or local values, the same in every process, with `sharding`. A sharding that
  spans processes is built shard by shard: each process supplies only its own devices' pieces
  (jax.make_array_from_callback), never a whole global array. An abstract value
  (jax.ShapeDtypeStruct) stays abstract and gains the sharding: that is how a step is lowered for
  devices this host does not have (`oppu_jax.compile_check`)."""
  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    if sharding.is_fully_addressable:
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(one, tree)


def _keys(path) -> tuple[str, ...]:
  return tuple(k.key for k in path)
