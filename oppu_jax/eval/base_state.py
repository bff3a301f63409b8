"""The base model as every evaluator runs it: split once, its frozen stacks in the backend's
form, sharded over a mesh if one is given, the users' stacked adapters whole on every device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from oppu_jax.models import backend
from oppu_jax.peft.stack import UserAdapters
from oppu_jax.sharding import mesh as mesh_lib


def prepare(model, adapters: UserAdapters | None, mesh=None):
  """-> (graphdef, base state, adapters on device, place): `place(rows array)` splits a batch's
  rows over the mesh's users axis (None without a mesh)."""
  graphdef, base = nnx.split(model)
  base = backend.frozen_base(base, model.config, model.weight_table())  # CPU: free uint16 views
  adapters = None if adapters is None else jax.tree.map(jnp.asarray, adapters)
  if mesh is None:
    return graphdef, base, adapters, None
  base = mesh_lib.shard_base(base, mesh, model.weight_table())
  adapters = mesh_lib.put(adapters, mesh_lib.replicated(mesh))
  return graphdef, base, adapters, mesh_lib.rows_placer(mesh)


def check_users(adapters, rows) -> None:
  """`adapters` is a UserAdapters (or None) and every row's user index names one of them."""
  if adapters is not None and not isinstance(adapters, UserAdapters):
    raise TypeError(f"adapters: a UserAdapters or None, got {type(adapters).__name__}")
  if adapters is not None and rows:
    n_users = adapters.num_users
    bad = [u for u, _ in rows if not 0 <= u < n_users]
    if bad:
      raise ValueError(f"user index {bad[0]} out of range for {n_users} stacked adapters")
