"""T5 / FlanT5: encoder outputs, logits and generation equal transformers' on tiny random
checkpoints that transformers saved (every option the loader reads), and the checkpoint formats."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tiny_t5  # noqa: E402
from oppu_jax.errors import ConfigError, ModelError  # noqa: E402
from oppu_jax.eval import decode  # noqa: E402
from oppu_jax.models import llama, load, t5_config  # noqa: E402
from oppu_jax.models.decoding import Decoding  # noqa: E402
from oppu_jax.models.tokenizer import Tokenizer  # noqa: E402

# A right-padded batch of different lengths, as T5 is fed.
SOURCE = np.array([[5, 6, 7, 8, 9, 10, 11, 33, 41, 1], [12, 13, 14, 1, 0, 0, 0, 0, 0, 0]])
SOURCE_MASK = np.arange(10)[None] < np.array([[10], [4]])
TARGET = np.array([[0, 20, 21, 22, 23, 24], [0, 30, 31, 32, 0, 0]])
TARGET_MASK = np.arange(6)[None] < np.array([[6], [4]])


def _rel(ours, ref, mask):
  return float(np.abs(np.asarray(ours) - ref)[mask].max() / np.abs(ref[mask]).max())


@pytest.fixture(scope="module", params=list(tiny_t5.VARIANTS))
def pair(request, tmp_path_factory):
  """(variant, checkpoint dir, transformers' model, ours) for each variant."""
  path = tiny_t5.save_t5(tmp_path_factory.mktemp(request.param), request.param)
  hf = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
  model, _ = load.load_model(path)
  return request.param, path, hf, model


def _hf_forward(hf, **kw):
  with torch.no_grad():
    return hf(input_ids=torch.tensor(SOURCE), attention_mask=torch.tensor(SOURCE_MASK.astype(int)),
              decoder_input_ids=torch.tensor(TARGET),
              decoder_attention_mask=torch.tensor(TARGET_MASK.astype(int)), **kw)


def _ours(model, **kw):
  positions = jnp.broadcast_to(jnp.arange(TARGET.shape[1]), TARGET.shape)
  return model(jnp.asarray(TARGET), positions=positions, attention_mask=jnp.asarray(TARGET_MASK),
               encoder={"tokens": jnp.asarray(SOURCE),
                        "attention_mask": jnp.asarray(SOURCE_MASK)}, **kw)[0]


@pytest.mark.slow
@pytest.mark.torch
def test_encoder_outputs_and_logits_equal_transformers_in_f32(pair):
  variant, _, hf, model = pair
  ref = _hf_forward(hf)
  encoded = model.encode(jnp.asarray(SOURCE), attention_mask=jnp.asarray(SOURCE_MASK))
  assert _rel(encoded, ref.encoder_last_hidden_state.numpy(), SOURCE_MASK) <= 1e-4
  assert _rel(_ours(model), ref.logits.numpy(), TARGET_MASK) <= 1e-4
  # The options really differ between the variants (a test that would pass on one wiring only).
  assert model.config.gated == (variant == "flan")
  assert model.config.scale_decoder_outputs == (variant == "t5")


def test_the_weight_table_names_exactly_the_checkpoints_tensors(pair):
  _, path, _, model = pair
  from safetensors import safe_open

  with safe_open(os.path.join(path, "model.safetensors"), "np") as f:
    saved = set(f.keys())
  table = {w.hf_name(i) for w in model.weight_table().weights
           for i in (range(w.num_layers) if w.stacked else [None])}
  assert table == saved


@pytest.mark.torch
def test_an_untied_lm_head_as_flan_t5_publishes_it(tmp_path):
  path = tiny_t5.save_t5(tmp_path / "flan", "flan")
  head = tiny_t5.add_untied_head(path)
  hf = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
  model, config = load.load_model(path)
  assert not config.tie_embeddings and not config.scale_decoder_outputs
  decoder_states = _hf_forward(hf, output_hidden_states=True).decoder_hidden_states[-1].numpy()
  ref = decoder_states @ head.T  # the published head, which transformers 5 would tie away
  assert _rel(_ours(model), ref, TARGET_MASK) <= 1e-4


@pytest.mark.slow
def test_sharded_and_bf16_checkpoints_load(tmp_path):
  path = tiny_t5.save_t5(tmp_path / "one", "flan")
  hf = transformers.T5ForConditionalGeneration.from_pretrained(path)
  hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
  one, _ = load.load_model(path)
  sharded, _ = load.load_model(str(tmp_path / "sharded"))
  np.testing.assert_array_equal(_ours(sharded), _ours(one))
  hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  bf16, config = load.load_model(str(tmp_path / "bf16"), param_dtype="bfloat16")
  assert config.param_dtype == "bfloat16"
  # bf16 weights (8 bits of mantissa) through 5 layers: about 1 % of the logits' scale.
  assert _rel(_ours(bf16), np.asarray(_ours(one)), TARGET_MASK) <= 3e-2


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("beams", [1, 4])
def test_greedy_and_beam_search_are_token_identical_to_transformers(pair, beams):
  _, _, hf, model = pair
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(3, 96, size=n)) + [1] for n in (7, 3, 11, 5)]
  decoding = Decoding(max_new_tokens=12, method="beam" if beams > 1 else "greedy",
                      num_beams=beams, batch_size=4)
  ours = decode.generate_for_rows(model, None, [(0, p) for p in prompts], decoding, eos_id=1,
                                  pad_id=0)
  width = max(map(len, prompts))
  ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
  mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
  with torch.no_grad():
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, num_beams=beams,
                      do_sample=False, early_stopping=False, length_penalty=1.0)
  ref = [row[1:row.index(1)] if 1 in row else row[1:] for row in out.tolist()]
  assert ours == ref
  assert any(len(r) > 2 for r in ref)  # not a trivial all-EOS comparison


def test_bare_names_expand_to_every_stack_and_llama_names_stay_exact():
  table = t5_config.weight_table(t5_config.tiny_config())
  assert table.check_projections(("v", "q")) == ("enc.q", "enc.v", "dec.q", "dec.v", "cross.q",
                                                 "cross.v")
  assert table.check_projections(("enc.q", "down")) == ("enc.q", "enc.down", "dec.down")
  with pytest.raises(ConfigError, match="unknown projection 'wq'"):
    table.check_projections(("wq",))
  assert llama.weight_table(llama.tiny_config()).check_projections(("v", "q")) == ("q", "v")


def test_config_errors_name_the_file(tmp_path):
  path = tiny_t5.save_t5(tmp_path / "bad", "flan")
  config_file = os.path.join(path, "config.json")
  with open(config_file) as f:
    config = json.load(f)
  config["feed_forward_proj"] = "gated-swish"
  with open(config_file, "w") as f:
    json.dump(config, f)
  with pytest.raises(ModelError, match="gated-swish"):
    load.load_model(path)
  del config["d_kv"]
  with open(config_file, "w") as f:
    json.dump(config, f)
  with pytest.raises(ModelError, match=r"config.json: missing key 'd_kv'"):
    load.load_model(path)


@pytest.mark.torch
def test_t5_tokenizers_encode_as_transformers_and_sentencepiece(tmp_path):
  """A tokenizer.json directory (T5TokenizerFast) and a spiece.model one (older T5 releases):
  our ids are transformers' (and SentencePiece's own) without the `</s>` they append (the
  pipeline appends EOS itself)."""
  spm = pytest.importorskip("sentencepiece")
  corpus = ["What is the score of the following review on a scale of 1 to 5? review: fine",
            "Generate a headline for the following article: the team won the final cup"] * 8
  fast = tiny_t5.save_t5_tokenizer(tmp_path / "fast", corpus, vocab_size=60)
  (tmp_path / "corpus.txt").write_text("\n".join(corpus))
  spm.SentencePieceTrainer.train(
      input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "spiece"), vocab_size=60,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="unigram", hard_vocab_limit=False,
      minloglevel=2)
  os.makedirs(tmp_path / "slow")
  os.replace(tmp_path / "spiece.model", tmp_path / "slow" / "spiece.model")
  (tmp_path / "slow" / "tokenizer_config.json").write_text(
      json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "slow" / "spiece.model"))
  slow = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "slow"))
  for path, hf in ((tmp_path / "fast", fast), (tmp_path / "slow", slow)):
    ours = Tokenizer.for_model(str(path))
    assert (ours.eos_id, ours.pad_id, ours.bos_id, ours.add_bos) == (1, 0, None, False)
    for text in ("the team won the review", "a scale of 1 to 5"):
      assert ours.encode(text) + [1] == hf(text).input_ids
      if path.name == "slow":
        assert ours.encode(text) == sp.encode(text)
        assert 2 not in ours.encode(text)  # no unknown pieces: a real encoding
