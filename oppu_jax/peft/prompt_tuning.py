"""Prompt tuning as a pure pytree: n virtual token embeddings prepended to the input.

Adapter tree: {"prompt": [n_virtual, hidden]}. Initialised from the embeddings of a text (e.g.
the task instruction), cycled to length n as HF PEFT's TEXT init does, or randomly from the
vocabulary's embeddings. HF PEFT tensor: `prompt_embeddings` [n_virtual, hidden].
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from oppu_jax.errors import AdapterFormatError
from oppu_jax.models.weights import WeightTable
from oppu_jax.peft import hf_format
from oppu_jax.peft.method import BuildContext, register


@register
@dataclasses.dataclass(frozen=True)
class PromptTuning:
  name: ClassVar[str] = "prompt_tuning"
  peft_type: ClassVar[str] = "PROMPT_TUNING"

  num_virtual_tokens: int = 20
  init_token_ids: tuple[int, ...] = ()  # token ids of the init text; empty = random vocab rows

  @classmethod
  def from_config(cls, peft_config, context: BuildContext) -> "PromptTuning":
    """num_virtual_tokens from the config; the prompt starts as the task instruction's tokens."""
    if context.encode is None:
      raise ValueError("PromptTuning.from_config: pass `encode` (the tokenizer) for the task "
                       "instruction the prompt starts from")
    return cls(int(peft_config.num_virtual_tokens),
               tuple(context.encode(context.instruction)))

  def init(self, table: WeightTable, key: jax.Array, embed: jax.Array | None = None) -> dict:
    """`embed` [vocab, hidden] is the base model's input embedding table."""
    if embed is None:
      raise ValueError("prompt tuning needs the base embedding table to initialise from")
    n = self.num_virtual_tokens
    if self.init_token_ids:
      ids = jnp.resize(jnp.asarray(self.init_token_ids, jnp.int32), (n,))
    else:
      ids = jax.random.randint(key, (n,), 0, table.at("embed").shape[0])
    return {"prompt": jnp.take(embed, ids, axis=0).astype(jnp.float32)}

  def project(self, name, x, w, adapter_layer, rng, matmul):
    del name, adapter_layer, rng
    return matmul(x, w)

  def prefix(self, adapter) -> jax.Array:
    return adapter["prompt"]

  # -- HF PEFT ----------------------------------------------------------------------------------

  def to_hf(self, adapter: dict, table: WeightTable, model_config=None):
    del table  # the init ids do not matter once the prompt is trained; PEFT writes RANDOM
    prompt = np.asarray(adapter["prompt"], np.float32)  # [n, hidden]
    config = {
        **_DEFAULTS, "num_virtual_tokens": int(prompt.shape[0]), "token_dim": int(prompt.shape[1]),
        # Unknown without the model config; PEFT fills nulls from the base model when it loads.
        "num_attention_heads": model_config.num_heads if model_config else None,
        "num_layers": model_config.num_layers if model_config else None,
    }
    return config, {"prompt_embeddings": prompt}

  @classmethod
  def from_hf(cls, hf_config, tensors, table, model_config, where):
    del model_config
    hf_format.reject_features(hf_config, where.config, ("modules_to_save",))
    submodules = hf_config.get("num_transformer_submodules") or 1
    if submodules != 1:
      raise AdapterFormatError(f"{where.config}: num_transformer_submodules {submodules} is not "
                               "supported (decoder-only models use 1)")
    hidden = table.at("embed").shape[1]
    token_dim = hf_config.get("token_dim") or hidden
    if token_dim != hidden:
      raise AdapterFormatError(f"{where.config}: token_dim {token_dim} != the model's hidden "
                               f"size {hidden}")
    n = hf_format.number(hf_config, "num_virtual_tokens", int, where.config)
    hf_format.check_tensors(tensors, {"prompt_embeddings": (n, hidden)}, where.weights)
    prompt = jnp.asarray(tensors["prompt_embeddings"], jnp.float32)  # [n, hidden]
    return cls(num_virtual_tokens=n), {"prompt": prompt}


# What PEFT 0.21.2 writes for prompt tuning besides the common fields and those set in to_hf.
_DEFAULTS = {
    "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM",
    "prompt_tuning_init_text": None, "tokenizer_kwargs": None, "tokenizer_name_or_path": None,
}
