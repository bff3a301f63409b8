"""Shared fixtures (the embedded SmolLM2 loaded once per session, ours and transformers'), the
tiers' markers and workers' groups, and the session's XLA compilation cache."""

import atexit
import os
import shutil
import tempfile

import pytest

# One persistent XLA compilation cache per test session, shared with the processes the tests
# start (they inherit the environment): a computation the tests build again and again (the tiny
# models' steps, scoring, decoding) compiles once. A fresh directory every session, so no test
# depends on an earlier one; JAX_COMPILATION_CACHE_DIR set by the caller is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="oppu_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Most of a tiny model's test is XLA:CPU compiling its programs, and most of that is LLVM
# optimising each fused kernel: the tests compile without those optimisations (the matmuls are
# library calls either way). The tests' tolerances hold at this level and at XLA's default (3),
# which every run outside the tests keeps. Appended to the caller's flags unless they set a level
# (XLA_FLAGS=--xla_backend_optimization_level=3 runs the tests at the default); the tests that
# start processes append theirs to these.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()
# Under pytest-xdist (pyproject's addopts: 2 workers) PyTorch keeps to one thread per worker: its
# OpenMP threads spin at barriers when the cores are oversubscribed (benchmarks/README.md).
if os.environ.get("PYTEST_XDIST_WORKER"):
  os.environ.setdefault("OMP_NUM_THREADS", "1")

_REAL = {"smollm2", "smollm2_hf", "smollm2_hf_tokenizer"}  # fixtures loading the real weights
_TORCH = {"smollm2_hf", "smollm2_hf_tokenizer"}
_SLOW = {"analysed"}  # tests/analysis: a tiny run with all eight analyses (~1.5 min to build)


# tryfirst: pytest-xdist's worker reads the xdist_group marks in its own collection hook, which
# pluggy would otherwise call before this conftest's; marks added after it are ignored and every
# module or session fixture was built once per worker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """The tiers (pyproject's markers): real_weights / torch from the fixtures a test takes; slow
  for every multiprocess and real_weights test, so `-m "not slow"` leaves them out. And the
  workers' groups."""
  for item in items:
    # pytest-xdist's groups: a file's tests share its module fixtures; tests/analysis/ shares the
    # session fixture of a whole analysed run (built once per worker that runs any of them).
    path = item.nodeid.split("::")[0]
    item.add_marker(pytest.mark.xdist_group(
        "tests/analysis" if path.startswith("tests/analysis/") else path))
    names = set(getattr(item, "fixturenames", ()))
    if names & _REAL:
      item.add_marker(pytest.mark.real_weights)
    if names & _TORCH:
      item.add_marker(pytest.mark.torch)
    if (names & _SLOW or item.get_closest_marker("multiprocess")
        or item.get_closest_marker("real_weights")):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smollm2():
  """(our Llama, its config) from the embedded GGUF, f32."""
  from oppu_jax.models import load

  return load.load_model()


@pytest.fixture(scope="session")
def smollm2_hf():
  """transformers' LlamaForCausalLM on the same GGUF (it dequantizes the same weights), f32."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from oppu_jax.models import load

  path = load.embedded_gguf_path()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
  )
  return model.eval()


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer():
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  from oppu_jax.models import load

  path = load.embedded_gguf_path()
  return transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path)
  )


@pytest.fixture(scope="session")
def llama2_tokenizer_dir(tmp_path_factory):
  """A factory of tiny Llama-2-style HF tokenizer directories: a BPE `tokenizer.json` (bos <s> 1,
  eos </s> 2) whose post-processor prepends <s> when `post_processor` (as Llama-2's does), and a
  `tokenizer_config.json` (LlamaTokenizerFast, the chat template of Llama-2-chat, which writes
  the BOS itself, unless `chat_template` is False) with `add_bos_token` unless it is None."""
  import json

  import tokenizers
  from tokenizers import decoders, models, normalizers, processors, trainers

  def make(post_processor: bool = True, add_bos_token: bool | None = True,
           chat_template: bool = True) -> str:
    path = tmp_path_factory.mktemp("llama2_tokenizer")
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    corpus = ["What is the score of the following review on a scale of 1 to 5? review: great",
              "Generate a headline for the following article: the team won the cup"] * 4
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    if post_processor:
      tok.post_processor = processors.TemplateProcessing(
          single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_eos_token": False,
              "chat_template": "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} "
                               "[/INST]{% endfor %}"}
    if add_bos_token is not None:
      config["add_bos_token"] = add_bos_token
    if not chat_template:  # a base model's tokenizer (Llama-2-7B's ships none)
      del config["chat_template"]
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return str(path)

  return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
  """An HF-format checkpoint of a 2-layer random Llama with the embedded tokenizer's vocab."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from tiny_run import save_tiny_llama

  return save_tiny_llama(str(tmp_path_factory.mktemp("tiny_llama")))
