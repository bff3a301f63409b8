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
  adapters = None if adapters is None else jax.tree.map(_on_device, adapters)
  if mesh is None:
    return graphdef, base, adapters, None
  base = mesh_lib.shard_base(base, mesh, model.weight_table())
  adapters = mesh_lib.put(adapters, mesh_lib.replicated(mesh))
  return graphdef, base, adapters, mesh_lib.rows_placer(mesh)


def _on_device(x):
  """A host array to the device; an abstract one (compile_check) stays abstract."""
  return x if isinstance(x, jax.ShapeDtypeStruct) else jnp.asarray(x)


def trace_inputs(model, adapters: UserAdapters | None, rows_arrays, shared=None, mesh=None):
  """-> (graphdef, base, adapters, rows arrays, shared arrays) as a batch's program reads them,
  every array abstract (jax.ShapeDtypeStruct) and, with a mesh, placed as `prepare` places it:
  for tracing a program without running it (`oppu_jax.compile_check`)."""
  graphdef, base, adapters, place = prepare(model, adapters, mesh)
  abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  rows_arrays, shared = abstract(rows_arrays), abstract(shared)
  if mesh is not None:
    rows_arrays = jax.tree.map(place, rows_arrays)
    shared = mesh_lib.put(shared, mesh_lib.replicated(mesh))
  return graphdef, base, adapters, rows_arrays, shared


def check_users(adapters, rows) -> None:
  """`adapters` is a UserAdapters (or None) and every row's user index names one of them."""
  if adapters is not None and not isinstance(adapters, UserAdapters):
    raise TypeError(f"adapters: a UserAdapters or None, got {type(adapters).__name__}")
  if adapters is not None and rows:
    n_users = adapters.num_users
    bad = [u for u, _ in rows if not 0 <= u < n_users]
    if bad:
      raise ValueError(f"user index {bad[0]} out of range for {n_users} stacked adapters")
