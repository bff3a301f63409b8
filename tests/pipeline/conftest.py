"""A tiny random Llama checkpoint with SmolLM2's vocabulary, and tiny run configs."""


import pytest

from oppu_jax import config as base_config


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
  """An HF-format checkpoint (config.json + safetensors) of a 2-layer random Llama whose vocab
  matches the embedded tokenizer, so the whole pipeline runs in seconds."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  path = tmp_path_factory.mktemp("tiny_llama")
  cfg = transformers.LlamaConfig(
      vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, bos_token_id=1,
      eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
  )
  torch.manual_seed(0)
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


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
  """A random FlanT5-shaped checkpoint with its own T5 tokenizer (tokenizer.json), trained on the
  generated data of the tasks the T5 tests run, so a run's text is not all <unk>."""
  pytest.importorskip("torch")
  import tiny_t5
  from oppu_jax.data import synth, tasks

  path = tmp_path_factory.mktemp("tiny_t5")
  corpus = []
  for task in ("LaMP_2M", "LaMP_5"):
    data = synth.synthesize(task, seed=0, num_users=6, history_min=4, history_max=7,
                            queries_per_user=2, text_words=8)
    for user in data.users:
      corpus += [" ".join(str(v) for v in item.values()) for item in user.history]
      corpus += [q.input for q in user.queries] + [str(q.gold) for q in user.queries]
    corpus += list(tasks.get_task(task).labels or ())
  tokenizer = tiny_t5.save_t5_tokenizer(path, corpus, vocab_size=800)
  tiny_t5.save_t5(path, "flan", vocab_size=len(tokenizer))
  return str(path)
