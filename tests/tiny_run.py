"""A tiny run config: the task's embedded recipe on a few generated users, for a tiny model.

Also a config file for the command line (the multi-process tests start `oppu_jax.main` with it):
  python -m oppu_jax.main --config=tests/tiny_run.py:LaMP_3,/path/to/tiny_llama --workdir=W
and, run as a script, writes that tiny checkpoint: python tests/tiny_run.py /path/to/tiny_llama
"""

import sys

from oppu_jax import config as base_config


def get_config(arg: str):
  task, model_dir = arg.split(",", 1)
  return tiny_config(task, model_dir)


def save_tiny_llama(path: str, seed: int = 0) -> str:
  """An HF-format checkpoint (config.json + safetensors) of a 2-layer random Llama whose vocab
  matches the embedded tokenizer, so the whole pipeline runs in seconds."""
  import torch
  import transformers

  cfg = transformers.LlamaConfig(
      vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, bos_token_id=1,
      eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
  )
  torch.manual_seed(seed)
  transformers.LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
  return str(path)


def tiny_config(task: str, model_dir: str, **overrides):
  c = base_config.for_task(task)
  c.progress = False
  c.model.path = model_dir
  c.model.tokenizer = ""  # the tiny checkpoint has none: the embedded GGUF's is used
  c.model.compute_dtype = "float32"
  c.data.num_test_users = 3
  c.data.synth.num_users = 6
  c.data.synth.history_min = 4
  c.data.synth.history_max = 7
  c.data.synth.queries_per_user = 2
  c.data.synth.text_words = 8
  c.task_adapt.epochs = 1
  c.task_adapt.batch_size = 8
  c.train.epochs = 1
  c.train.slots = 2
  c.eval.max_new_tokens = 6
  c.model.cutoff = 384
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


if __name__ == "__main__":
  save_tiny_llama(sys.argv[1])
