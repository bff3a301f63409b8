"""A new model family is one file: a toy encoder-decoder ("toy_encdec") defined and registered
here trains, scores labels, decodes and round-trips HF PEFT adapters through the generic code
(train_users, score_choices, generate_for_rows, hf_format) with no change elsewhere."""

import dataclasses
import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from oppu_jax.eval.decode import generate_for_rows
from oppu_jax.eval.score import score_choices
from oppu_jax.models import backend
from oppu_jax.models.encoder_decoder import EncoderDecoder, encoder_states
from oppu_jax.models.family import Family, for_config, register
from oppu_jax.models.decoding import Decoding
from oppu_jax.models.interface import LanguageModel
from oppu_jax.models.layers import attention, matmul, plain_project, rms_norm
from oppu_jax.models.weights import Weight, WeightTable
from oppu_jax.peft import hf_format
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.stack import UserAdapters
from oppu_jax.train import multi_user
from oppu_jax.train.user_batches import plan_user

# -- the family ---------------------------------------------------------------------------------

EPS = 1e-6
ATTENTION = ("q", "k", "v", "o")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  vocab_size: int = 64
  d_model: int = 32
  heads: int = 4
  layers: int = 2  # per stack (encoder and decoder alike)
  pad_id: int = 0
  eos_id: int = 1
  bos_id: int | None = None
  decoder_start_id: int = 0
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  remat: bool = False
  backend: str = "auto"

  def __post_init__(self):
    object.__setattr__(self, "backend", backend.resolve(self.backend))

  @property
  def d_head(self) -> int:
    return self.d_model // self.heads

  def replace(self, **kw) -> "ToyConfig":
    return dataclasses.replace(self, **kw)

  @property
  def conventions(self) -> EncoderDecoder:
    return EncoderDecoder(self)


def _shapes(cfg: ToyConfig, decoder: bool) -> dict[str, tuple[int, ...]]:
  """One layer's weights of a stack, [d_in, d_out] for matrices, in model order."""
  d = cfg.d_model
  attn = {n: (d, d) for n in ATTENTION}
  shapes = {"attn_norm": (d,), **attn}
  if decoder:
    shapes.update({"cross_norm": (d,), **{f"cross_{n}": s for n, s in attn.items()}})
  shapes.update({"mlp_norm": (d,), "up": (d, 2 * d), "down": (2 * d, d)})
  return shapes


def _projection(stack: str, name: str) -> str | None:
  """The adapter name of a stack's weight ("enc.q", "dec.v", "cross.k"); None: not adaptable
  (norms, and the feed-forward, to keep the toy's name space to attention)."""
  if name.endswith("norm") or name in ("up", "down"):
    return None
  if name.startswith("cross_"):
    return "cross." + name.removeprefix("cross_")
  return ("enc." if stack == "encoder" else "dec.") + name


def weight_table(cfg: ToyConfig) -> WeightTable:
  axes = {"o": ("heads", "embed"), "up": ("embed", "mlp"), "down": ("mlp", "embed")}
  weights = [Weight(("embed",), "shared.weight", None, (cfg.vocab_size, cfg.d_model),
                    ("vocab", "embed"))]
  for stack in ("encoder", "decoder"):
    for name, shape in _shapes(cfg, stack == "decoder").items():
      hf = f"{stack}.layer.{{i}}.{name.replace('cross_', 'cross.')}.weight"
      weights.append(Weight(
          (stack, name), hf, None, shape,
          ("embed",) if len(shape) == 1 else axes.get(name.removeprefix("cross_"),
                                                       ("embed", "heads")),
          hf_transposed=len(shape) == 2, projection=_projection(stack, name),
          num_layers=cfg.layers))
    weights.append(Weight((stack, "final_norm"), f"{stack}.final_norm.weight", None,
                          (cfg.d_model,), ("embed",)))
  weights.append(Weight(("lm_head",), "lm_head.weight", None, (cfg.d_model, cfg.vocab_size),
                        ("embed", "vocab"), hf_transposed=True))
  return WeightTable(tuple(weights))


class Stack(nnx.Module):
  def __init__(self, cfg: ToyConfig, decoder: bool, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.param_dtype)
    self.names = tuple(_shapes(cfg, decoder))
    for name, shape in _shapes(cfg, decoder).items():
      value = (jnp.ones((cfg.layers, *shape)) if len(shape) == 1 else
               jax.random.normal(rngs.params(), (cfg.layers, *shape)) * shape[0] ** -0.5)
      setattr(self, name, nnx.Param(value.astype(dtype)))
    self.final_norm = nnx.Param(jnp.ones((cfg.d_model,), dtype))

  def layer(self, i: int) -> dict[str, jax.Array]:
    return {n: getattr(self, n)[...][i] for n in self.names}


class ToyEncDec(nnx.Module):
  """Pre-norm encoder (bidirectional) and decoder (causal + cross-attention); position info is
  an ALiBi-style bias on key - query offsets, so a decoder slot's offset is all it needs (the
  decode convention runs the decoder at slots P-1.., scoring at positions 0..)."""

  def __init__(self, config: ToyConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed = nnx.Param(jax.random.normal(
        rngs.params(), (config.vocab_size, config.d_model)).astype(config.param_dtype))
    self.encoder = Stack(config, False, rngs=rngs)
    self.decoder = Stack(config, True, rngs=rngs)
    # Untied: with a tied head the residual stream's input embedding wins the argmax and greedy
    # decoding just repeats its input, which would make the decoding test weak.
    self.lm_head = nnx.Param((0.5 * jax.random.normal(
        rngs.params(), (config.d_model, config.vocab_size))).astype(config.param_dtype))

  @property
  def conventions(self) -> EncoderDecoder:
    return self.config.conventions

  def matmul(self, x, w):
    return matmul(x, w, jnp.dtype(self.config.compute_dtype), backend.policy(self.config.backend))

  def weight_table(self) -> WeightTable:
    return weight_table(self.config)

  def embed_tokens(self, tokens):
    return jnp.take(self.embed[...], tokens, axis=0).astype(jnp.float32)

  def logits(self, hidden):
    return self.matmul(hidden, self.lm_head[...])

  def init_cache(self, batch, length, dtype=jnp.float32, source_len=0) -> dict:
    """As T5's: self k/v [layers, batch, length, heads, d_head]; with source_len, cross_k/v
    [layers, batch, source_len, ...] and source_mask [1, batch, source_len] (batch on axis 1)."""
    cfg = self.config
    shape = (cfg.layers, batch, length, cfg.heads, cfg.d_head)
    cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    if source_len:
      cross = (cfg.layers, batch, source_len, cfg.heads, cfg.d_head)
      cache.update(cross_k=jnp.zeros(cross, dtype), cross_v=jnp.zeros(cross, dtype),
                   source_mask=jnp.zeros((1, batch, source_len), bool))
    return cache

  def encode(self, tokens=None, *, attention_mask, embeds=None, adapter_layers=None,
             project=None, rng=None):
    cfg = self.config
    x = self.embed_tokens(tokens) if embeds is None else embeds.astype(jnp.float32)
    s = x.shape[1]
    mask = jnp.broadcast_to(attention_mask.astype(bool)[:, None, :], (x.shape[0], s, s))
    bias = _alibi(cfg, (jnp.arange(s)[None, :] - jnp.arange(s)[:, None])[None])
    project = project or plain_project(self.matmul)
    for i in range(cfg.layers):
      proj = _projector(project, "encoder", self.encoder.layer(i), adapter_layers, i, rng)

      def layer(x, proj=proj):
        h = rms_norm(x, proj.p["attn_norm"], EPS)
        x = x + proj("o", _attend(cfg, proj("q", h), proj("k", h), proj("v", h), mask, bias))
        return _mlp(self, proj.p, x)

      x = (jax.checkpoint(layer) if cfg.remat else layer)(x)
    return rms_norm(x, self.encoder.final_norm[...], EPS)

  def __call__(self, tokens=None, *, positions, attention_mask, embeds=None, cache=None,
               cache_index=0, adapter_layers=None, project=None, rng=None,
               return_hidden=False, encoder=None):
    """The decoder on `tokens`, cross-attending to `encoder` (tokens/embeds to encode here, or
    "hidden") or, without it, to a cache a previous call filled. As T5.__call__."""
    cfg = self.config
    project = project or plain_project(self.matmul)
    enc_rng, dec_rng = (None, None) if rng is None else jax.random.split(rng)
    src, source_mask = encoder_states(self, encoder, adapter_layers=adapter_layers,
                                      project=project, rng=enc_rng)
    if encoder is None and (cache is None or "cross_k" not in cache):
      raise ValueError("toy decoder: pass `encoder=` or a cache holding the encoder's k/v")
    x = self.embed_tokens(tokens) if embeds is None else embeds.astype(jnp.float32)
    b, t = x.shape[:2]
    if cache is None:
      rel = positions[:, None, :] - positions[:, :, None]  # [B, T, T] key - query
      given = attention_mask.astype(bool)
      mask = (given if given.ndim == 3 else given[:, None, :]) & (rel <= 0)
    else:
      rel = (jnp.arange(cache["k"].shape[2])[None, :] - (cache_index + jnp.arange(t))[:, None])
      rel = rel[None]  # [1, T, slots]
      mask = (rel <= 0) & attention_mask.astype(bool)[:, None, :]
    bias = _alibi(cfg, rel)
    if source_mask is None:
      source_mask = cache["source_mask"][0]
    cross_mask = jnp.broadcast_to(source_mask[:, None, :], (b, t, source_mask.shape[1]))
    fill_cross = cache is not None and src is not None
    for i in range(cfg.layers):
      proj = _projector(project, "decoder", self.decoder.layer(i), adapter_layers, i, dec_rng)
      h = rms_norm(x, proj.p["attn_norm"], EPS)
      q, k, v = proj("q", h), proj("k", h), proj("v", h)
      if cache is not None:  # write this step's k/v at cache_index, attend over all slots
        k, v = _heads(cfg, k), _heads(cfg, v)
        at = (i, 0, cache_index, 0, 0)
        cache = dict(cache, k=jax.lax.dynamic_update_slice(cache["k"], k[None], at),
                     v=jax.lax.dynamic_update_slice(cache["v"], v[None], at))
        k, v = cache["k"][i], cache["v"][i]
      x = x + proj("o", _attend(cfg, q, k, v, mask, bias))
      h = rms_norm(x, proj.p["cross_norm"], EPS)
      if src is not None:
        ck, cv = _heads(cfg, proj("cross_k", src)), _heads(cfg, proj("cross_v", src))
        if fill_cross:
          cache = dict(cache, cross_k=cache["cross_k"].at[i].set(ck),
                       cross_v=cache["cross_v"].at[i].set(cv))
      else:
        ck, cv = cache["cross_k"][i], cache["cross_v"][i]
      x = x + proj("cross_o", _attend(cfg, proj("cross_q", h), ck, cv, cross_mask, None))
      x = _mlp(self, proj.p, x)
    if fill_cross:
      cache = dict(cache, source_mask=source_mask[None])
    hidden = rms_norm(x, self.decoder.final_norm[...], EPS)
    return (hidden if return_hidden else self.logits(hidden)), cache


def _alibi(cfg, rel):
  """Offsets key - query [B or 1, Tq, Tk] -> bias [B or 1, heads, Tq, Tk]: a per-head slope."""
  slopes = 2.0 ** -(1.0 + jnp.arange(cfg.heads))
  return -slopes[None, :, None, None] * jnp.abs(rel).astype(jnp.float32)[:, None]


def _heads(cfg, y):
  return y if y.ndim == 4 else y.reshape(*y.shape[:-1], cfg.heads, cfg.d_head)


def _attend(cfg, q, k, v, mask, bias):
  out = attention(_heads(cfg, q), _heads(cfg, k), _heads(cfg, v), mask,
                  jnp.dtype(cfg.compute_dtype), backend.policy(cfg.backend), bias=bias)
  return out.reshape(*out.shape[:2], cfg.d_model)


def _mlp(model, p, x):
  h = rms_norm(x, p["mlp_norm"], EPS)
  return x + model.matmul(jax.nn.gelu(model.matmul(h, p["up"])), p["down"])


_KEY_INDEX = {n: i for i, n in enumerate(ATTENTION + tuple(f"cross_{n}" for n in ATTENTION))}


def _projector(project, stack, p, adapter_layers, layer, rng):
  """proj(our weight name, x): layer `layer`'s weight through the hook, with the adapter's slice
  of that layer (both stacks have `layers` layers, so one slice serves) and its own dropout key."""
  adapter_layer = (None if adapter_layers is None
                   else jax.tree.map(lambda a: a[layer], adapter_layers))

  def proj(name, x):
    key = None if rng is None else jax.random.fold_in(rng, 100 * layer + _KEY_INDEX[name])
    return project(_projection(stack, name), x, p[name], adapter_layer, key)

  proj.p = p
  return proj


def _no_config(*args):
  raise NotImplementedError("toy_encdec lives in a test: no checkpoints to read")


register(Family("toy_encdec", ToyEncDec, ToyConfig, (), (), _no_config, _no_config,
                weight_table))

# -- the tests ----------------------------------------------------------------------------------

CFG = ToyConfig()
LORA = Lora(targets=("enc.q", "dec.v"), rank=2, alpha=4)


class CharTokenizer:
  """Characters -> ids 3..42 (0 pad / decoder start, 1 EOS)."""

  eos_id = 1

  def encode(self, text):
    return [3 + (ord(ch) - ord("a")) % 40 for ch in text]


@pytest.fixture(scope="module")
def model():
  return ToyEncDec(CFG, rngs=nnx.Rngs(0))


def _users(model, seed=0):
  """Two LoRA adapters far from the base (B random, not zero) that differ."""
  table = model.weight_table()
  users = []
  for u in range(2):
    one = LORA.init(table, jax.random.PRNGKey(seed + u))
    rng = np.random.default_rng(seed + 10 + u)
    users.append(jax.tree.map(lambda x: np.asarray(x) + 0.5 * rng.standard_normal(x.shape)
                              .astype(np.float32), one))
  return users


@functools.partial(jax.jit, static_argnums=0)
def _direct_logits(graphdef, state, adapter_layers, dec, source):
  """The model called directly on one unpadded (encoder input, decoder input) pair, with the
  adapter through its own hook: no conventions, no scorer, no cache. (Jitted: eager dispatch
  compiles every op for every new shape.)"""
  model = nnx.merge(graphdef, state)
  logits, _ = model(dec, positions=jnp.arange(dec.shape[1])[None],
                    attention_mask=jnp.ones(dec.shape, bool),
                    encoder={"tokens": source, "attention_mask": jnp.ones(source.shape, bool)},
                    adapter_layers=adapter_layers,
                    project=functools.partial(LORA.project, matmul=model.matmul))
  return logits[0]


def _direct(model, adapter, dec, source):
  graphdef, state = nnx.split(model)
  return _direct_logits(graphdef, state, jax.tree.map(jnp.asarray, adapter["layers"]),
                        jnp.asarray([dec]), jnp.asarray([source]))


def test_registered_and_an_interface(model):
  assert isinstance(model, LanguageModel)
  assert for_config(CFG).model is ToyEncDec
  assert model.conventions.peft_task_type == "SEQ_2_SEQ_LM"


@pytest.mark.slow
def test_users_learn_their_own_answers(model):
  tok, rng = CharTokenizer(), np.random.default_rng(0)
  plans = []
  for u, answer in enumerate(("xyz", "pq")):
    examples = [model.conventions.example("".join(rng.choice(list("abcdefgh"), size=n)),
                                          answer, tok, cutoff=16)
                for n in rng.integers(3, 10, size=6)]
    plans.append(plan_user(f"u{u}", examples, batch_size=3, epochs=6, seq_buckets=(8, 16),
                           target_buckets=(4,)))
  config = multi_user.TrainConfig(learning_rate=5e-2, slots=2, warmup_ratio=0.0)
  results = multi_user.train_users(model, LORA, plans, config)
  for u in ("u0", "u1"):
    losses = results[u].losses
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses
  a, b = (results[u].adapter["layers"]["dec.v"]["b"] for u in ("u0", "u1"))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


# Two source and two choice lengths (the reference compiles one program per pair), so rows
# and choices are still padded in the scorer's batch.
ROWS = [(0, [5, 6, 7, 8, 1]), (1, [9, 10, 1]), (1, [11, 12, 13, 14, 1]), (0, [17, 18, 1])]
CHOICES = [[20, 1], [21, 22, 1], [23, 1]]


def _brute_score(model, adapter, source, choice):
  """The summed log-prob of `choice` after `source`, from one direct model call."""
  logits = _direct(model, adapter, [CFG.decoder_start_id] + choice[:-1], source)
  logp = jax.nn.log_softmax(logits, -1)
  return float(logp[jnp.arange(len(choice)), jnp.asarray(choice)].sum())


@pytest.mark.slow
def test_scores_each_row_under_its_users_adapter(model):
  users = _users(model)
  stacked = UserAdapters.stack(LORA, users)
  got = score_choices(model, stacked, ROWS, CHOICES, batch_size=4, buckets=(8,))
  for r, (user, source) in enumerate(ROWS):
    for c, choice in enumerate(CHOICES):
      assert got[r, c] == pytest.approx(_brute_score(model, users[user], source, choice),
                                        abs=1e-4)
  swapped = score_choices(model, stacked, [(1 - u, s) for u, s in ROWS], CHOICES,
                          batch_size=4, buckets=(8,))
  assert np.abs(swapped - got).max() > 1e-3
  for r, (user, source) in enumerate(ROWS):  # swapped rows follow the other user's adapter
    assert swapped[r, 0] == pytest.approx(_brute_score(model, users[1 - user], source,
                                                       CHOICES[0]), abs=1e-4)


@pytest.mark.slow
def test_greedy_decoding_equals_full_recompute(model):
  users = _users(model, seed=5)
  stacked = UserAdapters.stack(LORA, users)
  n = 5
  rows = [(0, [5, 6, 7, 8, 1]), (1, [9, 10, 1]), (1, [5, 6, 7, 8, 1])]
  got = generate_for_rows(model, stacked, rows,
                          Decoding(max_new_tokens=n, batch_size=4, prompt_buckets=(8,)),
                          eos_id=-1, pad_id=0)
  for (user, source), ids in zip(rows, got):
    seq = [CFG.decoder_start_id]
    for _ in range(n):  # no cache: the whole decoder input again every step
      seq.append(int(np.argmax(_direct(model, users[user], seq, source)[-1])))
    assert ids == seq[1:]
  assert got[0] != got[2]  # same source, other user: other tokens


def test_adapter_round_trips_through_hf_files(model, tmp_path):
  table = model.weight_table()
  adapter = _users(model)[0]
  hf_format.save_adapter(tmp_path / "u0", LORA, adapter, table, model_config=CFG)
  config = json.loads((tmp_path / "u0" / hf_format.CONFIG_NAME).read_text())
  assert config["task_type"] == "SEQ_2_SEQ_LM"
  # "q"/"v" name three modules each (encoder, decoder, cross): PEFT's regex names just ours.
  modules = {w.hf_module(i): p for p, w in table.projections.items() for i in range(CFG.layers)}
  targets = config["target_modules"]
  assert isinstance(targets, str)
  assert {m for m in modules if re.fullmatch(targets, m)} == {
      "encoder.layer.0.q", "encoder.layer.1.q", "decoder.layer.0.v", "decoder.layer.1.v"}
  method, loaded = hf_format.load_adapter(str(tmp_path / "u0"), table, CFG)
  assert method == LORA
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), loaded, adapter)
