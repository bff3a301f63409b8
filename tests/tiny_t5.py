"""Tiny random T5 checkpoints saved by transformers, and a tiny T5 tokenizer, for parity tests and
for running the pipeline on the FlanT5 path. (No FlanT5 weights can be downloaded here.)"""

import os

import numpy as np
import torch
import transformers

# Covers the options: gated-gelu (v1.1 / FlanT5) and relu (original T5), the scaled
# decoder output of original T5, fewer decoder than encoder layers (transformers 5.23 fails with
# more), d_kv * heads != d_model, non-default buckets and max distance.
VARIANTS = {
    "flan": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "t5": dict(feed_forward_proj="relu", tie_word_embeddings=True),
}


def save_t5(path, variant: str = "flan", vocab_size: int = 96, seed: int = 0, **kw) -> str:
  """A random T5ForConditionalGeneration saved in HF format at `path` (random norm weights too,
  so a wrong norm wiring cannot hide behind ones); returns the path."""
  args = dict(vocab_size=vocab_size, d_model=32, d_kv=12, d_ff=48, num_layers=3,
              num_decoder_layers=2, num_heads=3, relative_attention_num_buckets=8,
              relative_attention_max_distance=20, decoder_start_token_id=0, pad_token_id=0,
              eos_token_id=1, **VARIANTS[variant])
  args.update(kw)
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**args)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
  model.save_pretrained(path)
  return str(path)


def add_untied_head(path, seed: int = 1) -> np.ndarray:
  """Rewrites a saved checkpoint as FlanT5 is published: `tie_word_embeddings: false` and its own
  `lm_head.weight` [vocab, d_model]; returns that head. (transformers 5 would tie it away again on
  loading, so tests compare the untied head against its decoder states by hand.)"""
  import json

  from safetensors.numpy import load_file, save_file

  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  head = np.random.default_rng(seed).normal(0, 0.2, tensors["shared.weight"].shape)
  tensors["lm_head.weight"] = head.astype(np.float32)
  save_file(tensors, file, metadata={"format": "pt"})
  config_file = os.path.join(path, "config.json")
  with open(config_file) as f:
    config = json.load(f)
  config.update(tie_word_embeddings=False, scale_decoder_outputs=False)
  with open(config_file, "w") as f:
    json.dump(config, f)
  return tensors["lm_head.weight"]


def save_t5_tokenizer(path, corpus, vocab_size: int = 400) -> transformers.PreTrainedTokenizerFast:
  """A SentencePiece-style Unigram tokenizer (<pad> 0, </s> 1, <unk> 2, as T5's) trained on
  `corpus`, saved as T5TokenizerFast files (tokenizer.json + tokenizer_config.json)."""
  import tokenizers

  tok = tokenizers.SentencePieceUnigramTokenizer()
  tok.train_from_iterator(corpus, vocab_size=vocab_size,
                          special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
  hf = transformers.T5TokenizerFast(tokenizer_object=tok._tokenizer, eos_token="</s>",
                                    pad_token="<pad>", unk_token="<unk>", extra_ids=0)
  hf.save_pretrained(path)
  return hf


def main(argv=None):
  """`python tests/tiny_t5.py OUT_DIR [TASK ...]`: a tiny random FlanT5-shaped checkpoint with a
  T5 tokenizer trained on the tasks' generated LaMP data (config defaults, seed 0), to run the
  pipeline's FlanT5 path end to end: `--config.model.path=OUT_DIR`."""
  import argparse

  from oppu_jax import config as config_lib
  from oppu_jax.data import synth, tasks

  parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
  parser.add_argument("out")
  parser.add_argument("tasks", nargs="*", default=["LaMP_2M", "LaMP_5"])
  args = parser.parse_args(argv)
  corpus = []
  for task in args.tasks:
    data = synth.synthesize(task, seed=0, **config_lib.get_config().data.synth.to_dict())
    for user in data.users:
      corpus += [" ".join(str(v) for v in item.values()) for item in user.history]
      corpus += [q.input for q in user.queries] + [str(q.gold) for q in user.queries]
    corpus += list(tasks.get_task(task).labels or ())
  tokenizer = save_t5_tokenizer(args.out, corpus, vocab_size=2000)
  save_t5(args.out, "flan", vocab_size=len(tokenizer))
  print(f"{args.out}: a random T5 (3+2 layers x 32) with a {len(tokenizer)}-token tokenizer")


if __name__ == "__main__":
  main()
