"""Who writes the PAG profiles, and in which prompt format.

The OPPU paper writes them with Vicuna-7B (App. D), and a Llama-2-7B base has no chat template to
ask with. `config.profile.model_path` names any chat model: it is loaded only while profiles are
written and dropped before training. "" asks the run's base. The prompt goes through the profile
model's chat template; a profile model without one gets Vicuna v1.1's format (Vicuna's own
checkpoints ship none). The run's base without a template is a one-line error: a plain LM was
never taught any chat format.
"""

from __future__ import annotations

import contextlib
import gc
import logging

from oppu_jax.errors import ConfigError
from oppu_jax.models.tokenizer import Tokenizer, vicuna_v1_1


def check(config, base_tokenizer: Tokenizer) -> None:
  """Raises ConfigError, before any work, when the base would write profiles without a prompt
  format."""
  if not config.profile.model_path:
    _base_prompt_tokenizer(config, base_tokenizer)


@contextlib.contextmanager
def writer(config, base_model, base_tokenizer: Tokenizer, load_model, local_path):
  """Yields (model, tokenizer) to write profiles with: config.profile.model_path's (loaded by
  `load_model(path)` and released when the block ends) or the run's base; the tokenizer renders
  the prompt format `prompt_tokenizer` chose."""
  path = config.profile.model_path
  if not path:
    _decoder_only(base_model, "config.model.path", config.model.path)
    yield base_model, _base_prompt_tokenizer(config, base_tokenizer)
    return
  local = local_path(path)
  own = Tokenizer.for_model(local)
  tokenizer = prompt_tokenizer(own, config.profile.template, given=True, name=path)
  model = load_model(local)
  _decoder_only(model, "config.profile.model_path", path)
  logging.info("PAG profiles are written by %s in %s", path,
               "its chat template" if tokenizer is own else "Vicuna v1.1's format")
  try:
    yield model, tokenizer
  finally:
    del model
    gc.collect()  # its weights leave memory before training starts


def prompt_tokenizer(tokenizer: Tokenizer, template: str, *, given: bool, name: str) -> Tokenizer:
  """`tokenizer` rendering the profile prompt: its own chat template ("chat", or "auto" where it
  has one), Vicuna v1.1's ("vicuna", or "auto" for a profile model given by path without one)."""
  if template == "vicuna" or (template == "auto" and given and not tokenizer.has_chat_template):
    return tokenizer.with_chat_format(vicuna_v1_1)
  if tokenizer.has_chat_template:
    return tokenizer
  key = "config.profile.model_path" if given else "config.profile.model_path (unset)"
  raise ConfigError(f"{key}: {name} has no chat template to write PAG profiles with; name a chat "
                    "model (the OPPU paper used Vicuna-7B) or pass --config.profile.template="
                    "vicuna")


def _base_prompt_tokenizer(config, tokenizer: Tokenizer) -> Tokenizer:
  return prompt_tokenizer(tokenizer, config.profile.template, given=False,
                          name=config.model.path or "the embedded SmolLM2")


def _decoder_only(model, key: str, name: str) -> None:
  if not model.conventions.continues_prompt:
    raise ConfigError(f"{key}: {name} is an encoder-decoder; PAG profiles are written by a "
                      "decoder-only chat model (set config.profile.model_path to one)")
