"""Shared fixtures: the embedded SmolLM2 loaded once per session, ours and transformers'."""

import os

import pytest


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
