"""Folding a LoRA into the base weights (the paper merges its task-adaptation LoRA this way)."""

from __future__ import annotations

from flax import nnx

from oppu_jax.models.llama import Llama
from oppu_jax.peft.lora import Lora


def merge_lora(model: Llama, lora: Lora, adapter: dict) -> Llama:
  """A new model whose projection weights include the LoRA update; `model` is left unchanged."""
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state)
  for target in lora.targets:
    w = pure["layers"][target]
    pure["layers"][target] = (w.astype("float32") + lora.delta(adapter, target)).astype(w.dtype)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)
