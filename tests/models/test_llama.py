"""Logits of our Flax Llama against transformers' LlamaForCausalLM on the same weights."""

import jax.numpy as jnp
import numpy as np
import pytest

from oppu_jax.models import llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tiny_hf import tiny_hf_pair  # noqa: E402 (needs torch)


def _left_padded_batch():
  tokens = np.array([[5, 17, 33, 2, 91, 64, 8, 12], [0, 0, 0, 44, 9, 71, 3, 100]])
  mask = np.array([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]], bool)
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  return tokens, mask, positions


def _hf_logits(hf_model, tokens, mask, positions):
  with torch.no_grad():
    return hf_model(
        input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
        position_ids=torch.tensor(positions),
    ).logits.numpy()


@pytest.mark.parametrize("tie", [False, True])
def test_tiny_gqa_logits_match_transformers(tie):
  _, ours, hf = tiny_hf_pair(tie)
  tokens, mask, positions = _left_padded_batch()
  got, _ = ours(jnp.asarray(tokens), positions=jnp.asarray(positions),
                attention_mask=jnp.asarray(mask))
  want = _hf_logits(hf, tokens, mask, positions)
  got = np.asarray(got)[mask]
  want = want[mask]
  rel = np.abs(got - want).max() / np.abs(want).max()
  assert rel <= 1e-5, rel


@pytest.mark.slow
def test_kv_cache_decoding_equals_full_recompute():
  _, ours, _ = tiny_hf_pair()
  tokens, mask, positions = _left_padded_batch()
  full, _ = ours(jnp.asarray(tokens), positions=jnp.asarray(positions),
                 attention_mask=jnp.asarray(mask))
  cache_len = 12
  cache = llama.init_cache(ours.config, 2, cache_len)
  slot_mask = np.zeros((2, cache_len), bool)
  slot_mask[:, :8] = mask
  # Prefill the first 5 slots, then feed the rest one token at a time.
  step_logits = []
  logits, cache = ours(jnp.asarray(tokens[:, :5]), positions=jnp.asarray(positions[:, :5]),
                       attention_mask=jnp.asarray(slot_mask), cache=cache, cache_index=0)
  step_logits.append(np.asarray(logits))
  for t in range(5, 8):
    logits, cache = ours(jnp.asarray(tokens[:, t:t + 1]),
                         positions=jnp.asarray(positions[:, t:t + 1]),
                         attention_mask=jnp.asarray(slot_mask), cache=cache, cache_index=t)
    step_logits.append(np.asarray(logits))
  cached = np.concatenate(step_logits, axis=1)
  np.testing.assert_allclose(cached[mask], np.asarray(full)[mask], atol=1e-5, rtol=1e-5)


def test_bf16_compute_path_stays_close():
  _, ours, _ = tiny_hf_pair()
  tokens, mask, positions = _left_padded_batch()
  f32, _ = ours(jnp.asarray(tokens), positions=jnp.asarray(positions),
                attention_mask=jnp.asarray(mask))
  ours.config = ours.config.replace(compute_dtype="bfloat16")
  bf16, _ = ours(jnp.asarray(tokens), positions=jnp.asarray(positions),
                 attention_mask=jnp.asarray(mask))
  err = np.abs(np.asarray(bf16) - np.asarray(f32))[mask].max() / np.abs(np.asarray(f32)).max()
  assert 0 < err < 2e-2  # bf16 inputs do change the result, but only at bf16 precision


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2, smollm2_hf):
  model, _ = smollm2
  prompts = [
      [1, 504, 3458, 314, 253, 1234, 28, 30, 40, 3124, 9, 17, 2000, 45, 6],
      [2, 2, 2, 2, 2, 504, 3458, 314, 7, 8812, 42, 11, 300, 12, 13],
  ]
  tokens = np.array(prompts)
  mask = np.array([[1] * 15, [0] * 5 + [1] * 10], bool)
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  got, _ = model(jnp.asarray(tokens), positions=jnp.asarray(positions),
                 attention_mask=jnp.asarray(mask))
  got = np.asarray(got)[mask]
  want = _hf_logits(smollm2_hf, tokens, mask, positions)[mask]
  rel = np.abs(got - want).max() / np.abs(want).max()
  assert rel <= 1e-4, rel
  np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
