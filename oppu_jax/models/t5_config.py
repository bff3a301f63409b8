"""T5's config side: `T5Config`, `tiny_config`, reading an HF config.json, and the weight table.

Everything here is shapes and names, no arrays: the config, one stack layer's weight shapes
(`stack_shapes`, which `t5.Stack` allocates), the HF tensor names of each stack, our adapter
names for its projections (`projection_name`: "enc.q", "dec.q", "cross.q", ...), and
`weight_table`, which names every tensor once. The NNX modules and the layer functions are in
`t5.py`.
"""

from __future__ import annotations

import dataclasses

from oppu_jax.errors import ModelError
from oppu_jax.models import backend
from oppu_jax.models.encoder_decoder import EncoderDecoder
from oppu_jax.models.weights import Weight, WeightTable

ACTIVATIONS = ("gated-gelu", "gated-relu", "relu", "gelu")


@dataclasses.dataclass(frozen=True)
class T5Config:
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_layers: int  # encoder layers
  num_decoder_layers: int
  num_heads: int
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "gated-gelu"
  tie_embeddings: bool = False  # no lm_head: logits from the shared embedding
  scale_decoder_outputs: bool = False  # multiply by d_model**-0.5 before the head
  pad_id: int = 0
  eos_id: int = 1
  bos_id: int | None = None
  decoder_start_id: int = 0
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  remat: bool = False
  backend: str = "auto"

  def __post_init__(self):
    if self.feed_forward_proj not in ACTIVATIONS:
      raise ModelError(f"feed_forward_proj {self.feed_forward_proj!r} is not supported; "
                       f"oppu_jax reads {', '.join(ACTIVATIONS)}")
    object.__setattr__(self, "backend", backend.resolve(self.backend))

  @property
  def gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated")

  @property
  def inner_dim(self) -> int:
    return self.num_heads * self.d_kv

  def replace(self, **kw) -> "T5Config":
    return dataclasses.replace(self, **kw)

  @property
  def conventions(self) -> EncoderDecoder:
    """How text becomes this family's inputs and targets, scored labels and decoding."""
    return EncoderDecoder(self)


def tiny_config(**kw) -> T5Config:
  """A small random-init config (d_kv * heads != d_model, fewer decoder layers), for tests."""
  base = dict(vocab_size=96, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=1,
              num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20)
  base.update(kw)
  return T5Config(**base)


def config_from_hf(hf: dict, source: str = "config.json", tensor_names=None) -> T5Config:
  """An HF T5 config.json (as a dict) -> T5Config; ModelError naming `source`. The head is the
  checkpoint's own `lm_head.weight` when `tensor_names` has one (FlanT5 as published), else the
  shared embedding (transformers 5 always ties and does not save it)."""
  has_lm_head = tensor_names is not None and "lm_head.weight" in tensor_names
  try:
    tied = hf.get("tie_word_embeddings", True) is not False
    return T5Config(
        vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
        num_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        num_heads=hf["num_heads"],
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
        feed_forward_proj=hf.get("feed_forward_proj", "relu"),
        tie_embeddings=not has_lm_head,
        scale_decoder_outputs=bool(hf.get("scale_decoder_outputs", tied)),
        pad_id=hf.get("pad_token_id", 0) if hf.get("pad_token_id") is not None else 0,
        eos_id=_first(hf.get("eos_token_id", 1)),
        decoder_start_id=hf.get("decoder_start_token_id") or 0,
    )
  except KeyError as e:
    raise ModelError(f"{source}: missing key {e.args[0]!r}") from None


def config_from_gguf(meta: dict, shapes: dict, source: str) -> T5Config:
  raise ModelError(f"{source}: T5 is read from Hugging Face checkpoint directories, not GGUF")


def _first(value):
  return value[0] if isinstance(value, list) else value


# -- the weight table ---------------------------------------------------------------------------

# ours -> HF suffix after "{stack}.block.{i}.", per stack; feed-forward names depend on gating.
_ENCODER_HF = {"attn_norm": "layer.0.layer_norm", "q": "layer.0.SelfAttention.q",
               "k": "layer.0.SelfAttention.k", "v": "layer.0.SelfAttention.v",
               "o": "layer.0.SelfAttention.o", "mlp_norm": "layer.1.layer_norm"}
_DECODER_HF = {"attn_norm": "layer.0.layer_norm", "q": "layer.0.SelfAttention.q",
               "k": "layer.0.SelfAttention.k", "v": "layer.0.SelfAttention.v",
               "o": "layer.0.SelfAttention.o", "cross_norm": "layer.1.layer_norm",
               "cross_q": "layer.1.EncDecAttention.q", "cross_k": "layer.1.EncDecAttention.k",
               "cross_v": "layer.1.EncDecAttention.v", "cross_o": "layer.1.EncDecAttention.o",
               "mlp_norm": "layer.2.layer_norm"}


def _ff_names(config: T5Config, layer: str) -> dict[str, str]:
  if config.gated:
    return {"gate": f"{layer}.DenseReluDense.wi_0", "up": f"{layer}.DenseReluDense.wi_1",
            "down": f"{layer}.DenseReluDense.wo"}
  return {"up": f"{layer}.DenseReluDense.wi", "down": f"{layer}.DenseReluDense.wo"}


def stack_shapes(config: T5Config, decoder: bool) -> dict[str, tuple[int, ...]]:
  """One layer's weights of a stack, [d_in, d_out] for projections, in model order."""
  d, inner, f = config.d_model, config.inner_dim, config.d_ff
  attn = {"q": (d, inner), "k": (d, inner), "v": (d, inner), "o": (inner, d)}
  shapes = {"attn_norm": (d,), **attn}
  if decoder:
    shapes.update({"cross_norm": (d,), **{f"cross_{n}": s for n, s in attn.items()}})
  shapes["mlp_norm"] = (d,)
  if config.gated:
    shapes["gate"] = (d, f)
  shapes.update({"up": (d, f), "down": (f, d)})
  return shapes


def projection_name(stack: str, name: str) -> str | None:
  """Our adapter name for a stack's weight: "enc.q", "dec.q", "cross.q", "dec.down"; None for
  a norm."""
  if name.endswith("norm"):
    return None
  if name.startswith("cross_"):
    return "cross." + name.removeprefix("cross_")
  return ("enc." if stack == "encoder" else "dec.") + name


_AXES = {"q": ("embed", "heads"), "k": ("embed", "heads"), "v": ("embed", "heads"),
         "o": ("heads", "embed"), "gate": ("embed", "mlp"), "up": ("embed", "mlp"),
         "down": ("mlp", "embed")}


def weight_table(config: T5Config) -> WeightTable:
  """Every T5 weight: HF name, our shape [d_in, d_out], logical axes, adaptability."""
  d, v, buckets = config.d_model, config.vocab_size, config.relative_attention_num_buckets
  weights = [Weight(("embed",), "shared.weight", None, (v, d), ("vocab", "embed"))]
  for stack, n, names, ff_layer in (("encoder", config.num_layers, _ENCODER_HF, "layer.1"),
                                    ("decoder", config.num_decoder_layers, _DECODER_HF,
                                     "layer.2")):
    hf_names = {**names, **_ff_names(config, ff_layer)}
    weights.append(Weight(
        (stack, "rel_bias"), f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias."
        "weight", None, (buckets, config.num_heads), ("buckets", "heads")))
    for name, shape in stack_shapes(config, stack == "decoder").items():
      projection = projection_name(stack, name)
      weights.append(Weight(
          (stack, name), f"{stack}.block.{{i}}.{hf_names[name]}.weight", None, shape,
          ("embed",) if projection is None else _AXES[name.removeprefix("cross_")],
          hf_transposed=projection is not None, projection=projection, num_layers=n))
    weights.append(Weight((stack, "final_norm"), f"{stack}.final_layer_norm.weight", None, (d,),
                          ("embed",)))
  if not config.tie_embeddings:
    weights.append(Weight(("lm_head",), "lm_head.weight", None, (d, v), ("embed", "vocab"),
                          hf_transposed=True))
  return WeightTable(tuple(weights))
