"""Mean-pooled embeddings: independent of padding and batch, unit norm, and usable by
`least_similar_history`."""

import jax
import numpy as np
import pytest
from flax import nnx

from oppu_jax.data import retrieval
from oppu_jax.eval import embed
from oppu_jax.models import llama

WORDS = ("<pad> camera battery screen lens zoom pasta sauce garlic basil oven "
         "goal match team score coach").split()


class WordTokenizer:
  """Whitespace words -> ids from WORDS; all the embedder needs is encode and pad_id."""

  pad_id = 0

  def encode(self, text):
    return [WORDS.index(w) for w in text.split()]


@pytest.fixture(scope="module")
def model():
  """A random tiny Llama, weights drawn in numpy (eager JAX init is slow)."""
  model = llama.abstract_model(llama.tiny_config(vocab_size=len(WORDS)))
  state = nnx.state(model)
  rng = np.random.default_rng(0)
  pure = jax.tree_util.tree_map_with_path(
      lambda path, leaf: np.ones(leaf.shape, np.float32) if "norm" in jax.tree_util.keystr(path)
      else (0.3 * rng.standard_normal(leaf.shape)).astype(np.float32),
      nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


def _text(rng, n):
  return " ".join(rng.choice(WORDS[1:], n))


def test_padding_and_batch_do_not_change_a_vector(model):
  e = embed.mean_pooled_embedder(model, WordTokenizer(), batch_size=4, max_tokens=64)
  rng = np.random.default_rng(0)
  # Batched, the short texts share a batch (and a bucket) with longer ones and get more padding.
  texts = [_text(rng, n) for n in (40, 5, 9, 60, 2, 33)]
  batched = e(texts)
  for i, text in enumerate(texts):
    np.testing.assert_allclose(batched[i], e([text])[0], atol=1e-5)
  assert np.abs(batched[0] - batched[1]).max() > 1e-2  # distinct texts, distinct vectors


def test_vectors_are_unit_norm_and_mean_pooled(model):
  e = embed.mean_pooled_embedder(model, WordTokenizer(), batch_size=4, max_tokens=16)
  texts = ["camera battery", "pasta sauce garlic basil oven", "", "goal " * 30]
  out = e(texts)
  assert out.shape == (4, model.config.hidden_size) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out[[0, 1, 3]], axis=1), 1.0, atol=1e-5)
  assert not out[2].any()  # an empty text: a zero vector (least_similar gives it similarity 0)
  # The direct computation: the mean of the final hidden states over the tokens, normalised.
  ids = WordTokenizer().encode(texts[1])
  hidden, _ = model(np.array([ids]), positions=np.arange(len(ids))[None],
                    attention_mask=np.ones((1, len(ids)), bool), return_hidden=True)
  mean = np.asarray(hidden[0]).mean(0)
  np.testing.assert_allclose(out[1], mean / np.linalg.norm(mean), atol=1e-5)
  # Over max_tokens: cut to the first 16 tokens.
  np.testing.assert_allclose(out[3], e(["goal " * 16])[0], atol=1e-5)


def test_least_similar_history_drops_the_items_like_the_query(model):
  e = embed.mean_pooled_embedder(model, WordTokenizer(), batch_size=4)
  query = "camera battery screen"
  history = ["pasta sauce garlic", query, "goal match team", "camera lens zoom screen",
             query, "basil oven pasta"]
  # The two copies of the query (cosine 1) go first; the rest stays, in time order.
  assert retrieval.least_similar_history([query], history, 4, e) == [0, 2, 3, 5]
  sims = e(history) @ e([query])[0]
  assert retrieval.least_similar_history([query], history, 2, e) == sorted(
      np.argsort(sims, kind="stable")[:2].tolist())
  assert retrieval.least_similar_history([query], history, 10, e) == list(range(6))
