"""Folding an adapter into the base weights (the paper merges its task-adaptation LoRA this way).

Generic over methods: a method that can be folded sets `can_merge` and implements
`merge(layer_weights, adapter)`; this file only moves the weights in and out of the model.
"""

from __future__ import annotations

from flax import nnx


def merge(model, method, adapter):
  """A new model whose projection weights include the adapter; `model` is left unchanged.

  adapter: one user's pytree (device arrays). A method without `merge` -> TypeError."""
  if not getattr(method, "can_merge", False):
    raise TypeError(f"PEFT method {getattr(method, 'name', type(method).__name__)!r} cannot be "
                    "merged into the base weights (it has no merge)")
  table = model.weight_table()
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state)
  paths = {name: w.path for name, w in table.projections.items()}
  merged = method.merge({name: _at(pure, path) for name, path in paths.items()}, adapter)
  for name, w in merged.items():
    *parents, leaf = paths[name]
    _at(pure, parents)[leaf] = w
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def _at(tree, path):
  for key in path:
    tree = tree[key]
  return tree
