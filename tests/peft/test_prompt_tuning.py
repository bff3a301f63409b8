"""Prompt tuning: virtual tokens change the logits, their outputs are dropped, init from text
embeddings, and a left-padded row gives what it gives alone."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from oppu_jax.peft import method
from oppu_jax.peft.prompt_tuning import PromptTuning

TOKENS = np.array([[5, 17, 33, 2, 91, 64, 8, 12], [0, 0, 0, 44, 9, 71, 3, 100]])
MASK = np.array([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]], bool)


def test_changes_logits_and_drops_virtual_outputs(tiny, forward):
  cfg, model = tiny
  pt, adapter = _prompt(cfg)
  tokens, mask = jnp.asarray(TOKENS[:1]), jnp.ones((1, 8), bool)
  positions = jnp.arange(8)[None]
  got = np.asarray(forward(model, pt, adapter, tokens, positions, mask))
  bare = np.asarray(forward(model, None, None, tokens, positions, mask))
  assert got.shape == bare.shape == (1, 8, cfg.vocab_size)
  assert np.abs(got - bare).max() > 1e-2
  # The kept outputs are the real tokens': the model on [prompt; tokens] at 0..n+T-1, minus n.
  n = pt.num_virtual_tokens
  embeds = jnp.concatenate([adapter["prompt"][None], model.embed_tokens(tokens)], axis=1)
  full, _ = nnx.jit(lambda m, e: m(embeds=e, positions=jnp.arange(n + 8)[None],
                                    attention_mask=jnp.ones((1, n + 8), bool)))(model, embeds)
  np.testing.assert_allclose(got, np.asarray(full)[:, n:], atol=1e-5)


def test_init_takes_token_rows_cycled(tiny, table):
  cfg, model = tiny
  embed = model.embed[...]
  prompt = PromptTuning(num_virtual_tokens=5, init_token_ids=(3, 9)).init(table, None, embed)
  np.testing.assert_array_equal(np.asarray(prompt["prompt"]), np.asarray(embed)[[3, 9, 3, 9, 3]])
  with pytest.raises(ValueError, match="embedding table"):
    PromptTuning(num_virtual_tokens=5).init(table, jax.random.key(0))


def test_built_from_config_starts_from_the_instruction(table):
  peft = ml_collections.ConfigDict(dict(method="prompt_tuning", num_virtual_tokens=6))
  encode = lambda text: [len(word) for word in text.split()]
  got = method.build(peft, table=table, encode=encode, instruction="rate this review")
  assert got == PromptTuning(num_virtual_tokens=6, init_token_ids=(4, 4, 6))


def test_left_padded_rows_equal_rows_alone(tiny, forward):
  cfg, model = tiny
  pt, adapter = _prompt(cfg)
  positions = np.maximum(np.cumsum(MASK, 1) - 1, 0)
  batched = np.asarray(forward(model, pt, adapter, jnp.asarray(TOKENS), jnp.asarray(positions),
                               jnp.asarray(MASK)))
  for row in range(len(TOKENS)):
    real = TOKENS[row][MASK[row]][None]
    alone = forward(model, pt, adapter, jnp.asarray(real), jnp.arange(real.shape[1])[None],
                    jnp.ones(real.shape, bool))
    np.testing.assert_allclose(batched[row][MASK[row]], np.asarray(alone)[0], atol=1e-5)


def _prompt(cfg, n=4):
  rng = np.random.default_rng(0)
  return PromptTuning(num_virtual_tokens=n), {
      "prompt": jnp.asarray(rng.normal(0, 1, (n, cfg.hidden_size)), jnp.float32)}
