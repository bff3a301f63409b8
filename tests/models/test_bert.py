"""The dense retriever's BERT encoder equals transformers' BertModel (+ sentence-transformers'
mean pooling and normalisation): on a tiny random BERT and on the real all-MiniLM-L6-v2."""

import json
import os
import tempfile
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from oppu_jax.errors import ModelError  # noqa: E402
from oppu_jax.models import bert  # noqa: E402

SENTENCES = ["A film about space travel.", "movie on astronauts flying to Mars",
             "a travel guide about space-saving furniture", "short",
             "The quick brown fox jumps over the lazy dog near the riverbank at dawn."]


def _reference(directory, texts, normalize):
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  model = transformers.BertModel.from_pretrained(directory).eval()
  batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**batch).last_hidden_state
  mask = batch["attention_mask"][..., None].float()
  pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  if normalize:
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
  return batch, hidden.numpy(), pooled.numpy()


@pytest.mark.torch
def test_tiny_random_bert_equals_transformers(tmp_path):
  # A WordPiece vocabulary from the real MiniLM, a random 2-layer model on it.
  archive = zipfile.ZipFile(bert.embedded_zip_path())
  for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    (tmp_path / name).write_bytes(archive.read(name))
  config = transformers.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=80)
  torch.manual_seed(0)
  transformers.BertModel(config).save_pretrained(tmp_path)
  batch, hidden, pooled = _reference(str(tmp_path), SENTENCES, normalize=False)
  model, _ = bert.load(str(tmp_path))
  ours = np.asarray(model(batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool)))
  mask = batch["attention_mask"].numpy().astype(bool)
  assert np.abs(ours - hidden)[mask].max() <= 1e-4
  embedded = bert.DenseEncoder(str(tmp_path)).embed(SENTENCES)
  assert np.abs(embedded - pooled).max() <= 1e-4
  assert not model.config.normalize  # no modules.json: plain mean pooling (Contriever's)


@pytest.mark.slow
@pytest.mark.real_weights
def test_real_all_minilm_embeddings_equal_sentence_transformers_recipe():
  encoder = bert.DenseEncoder()
  assert encoder.model.config.normalize and encoder.model.config.num_layers == 6
  with tempfile.TemporaryDirectory() as directory:
    archive = zipfile.ZipFile(bert.embedded_zip_path())
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
      with open(os.path.join(directory, name), "wb") as f:
        f.write(archive.read(name))
    _, _, reference = _reference(directory, SENTENCES, normalize=True)
  ours = encoder.embed(SENTENCES)
  assert np.abs(ours - reference).max() <= 1e-4
  # Meaning, not words: the paraphrase is closer than the text sharing "travel" and "space".
  scores = encoder.scores(SENTENCES[0], SENTENCES[1:3])
  assert scores[0] > scores[1] + 0.2


def test_bad_directories_fail_in_one_line(tmp_path):
  with pytest.raises(ModelError, match="does not exist"):
    bert.load(str(tmp_path / "missing"))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  (tmp_path / "pytorch_model.bin").write_bytes(b"x")
  with pytest.raises(ModelError, match="convert it to safetensors"):
    bert.load(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
  (tmp_path / "model.safetensors").write_bytes(b"")
  with pytest.raises(ModelError, match="model_type 'roberta'"):
    bert.load(str(tmp_path))
