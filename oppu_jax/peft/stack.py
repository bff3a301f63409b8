"""Many users' adapters of one PEFT method as one pytree with a leading [users] axis.

The trainer keeps its U slots in one `UserAdapters`, the evaluators gather each row's adapter from
one, and the pipeline builds one from the users' HF PEFT directories. It is a pytree (the method
is static metadata), so it passes through jit, vmap and device_put whole.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.errors import AdapterFormatError, ConfigError
from oppu_jax.peft import hf_format


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UserAdapters:
  """`tree`: the method's adapter pytree with every leaf [users, ...]; `method`: the PEFT method
  object (hashable, static under jit)."""

  tree: Any
  method: Any = dataclasses.field(metadata=dict(static=True))

  @classmethod
  def stack(cls, method, adapters: Sequence[Any]) -> "UserAdapters":
    """One adapter per user (host or device pytrees of the same structure) -> stacked, on host."""
    if not adapters:
      raise ValueError("UserAdapters.stack: no adapters")
    return cls(jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *adapters), method)

  @classmethod
  def like(cls, method, one: Any, num_users: int) -> "UserAdapters":
    """`num_users` zero-filled slots shaped like the single adapter `one` (placeholders to fill)."""
    return cls(jax.tree.map(lambda x: jnp.zeros((num_users, *x.shape), x.dtype), one), method)

  @property
  def num_users(self) -> int:
    return jax.tree.leaves(self.tree)[0].shape[0]

  @property
  def nbytes(self) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(self.tree))

  @property
  def bytes_per_user(self) -> int:
    return self.nbytes // max(self.num_users, 1)

  def user(self, index: int) -> Any:
    """One user's adapter, as host numpy arrays."""
    return jax.tree.map(lambda x: np.asarray(x[index]), self.tree)

  def set_user(self, index, adapter: Any) -> "UserAdapters":
    """A copy with slot `index` replaced by `adapter` (jit-friendly; traced `index` allowed)."""
    return dataclasses.replace(
        self, tree=jax.tree.map(lambda s, a: jnp.asarray(s).at[index].set(a), self.tree, adapter))

  def scaled(self, factor: float) -> "UserAdapters":
    """Every user's adapter at `factor` of its strength (`scaled`)."""
    if factor == 1:
      return self
    return dataclasses.replace(self, tree=scaled(self.method, self.tree, factor))

  def gather(self, users: jax.Array) -> Any:
    """Per-row adapters: users [rows] int -> the method's pytree with leaves [rows, ...]."""
    return jax.tree.map(lambda x: jnp.take(x, users, axis=0), self.tree)

  @classmethod
  def load(cls, directories: Sequence[str], table, model_config=None) -> "UserAdapters":
    """Reads users' HF PEFT directories (one method for all) into one stack, on host."""
    if not directories:
      raise ValueError("UserAdapters.load: no directories")
    loaded = [hf_format.load_adapter(d, table, model_config) for d in directories]
    method = loaded[0][0]
    for d, (m, _) in zip(directories, loaded):
      if m != method:
        raise AdapterFormatError(f"{d}: adapter config {m} differs from {directories[0]}'s "
                                 f"{method}; one stack holds one method")
    return cls.stack(method, [a for _, a in loaded])


def scaled(method, adapter: Any, factor: float) -> Any:
  """An adapter (or a stack's tree) at `factor` of its strength (1: as trained, 0: the bare
  base), for a method that defines one (`method.scaled`: LoRA, (IA)^3)."""
  if factor == 1:
    return adapter
  if not hasattr(method, "scaled"):
    raise ConfigError(f"config.eval.adapter_scale: {method.name} adapters have no strength to "
                      f"scale (lora and ia3 adapters do); use 1")
  return method.scaled(adapter, factor)
