"""The GGUF tokenizer against transformers' own GGUF tokenizer on the embedded SmolLM2."""

import os
import subprocess
import sys

import pytest

from oppu_jax.models.load import ModelError, embedded_gguf_path
from oppu_jax.models.tokenizer import Tokenizer

TEXTS = [
    "Hello, world!",
    "What is the score of the following review on a scale of 1 to 5? review: great",
    " 3",
    "3",
    "12345",
    "pi is 3.14159, e is 2.718 and 1,000,000 > 999",
    "café naïve façade Ærøskøbing",
    "日本語のテキストと中文",
    "emoji 🤗🚀👍🏽 mixed",
    "tabs\tand\ttabs",
    "line one\nline two\n\nline four\r\n",
    "   leading spaces and trailing   ",
    "many     spaces",
    "",
    "don't you'll it's I'M",
    "<|im_start|>user\nhi<|im_end|>\n",
    "code: def f(x):\n    return x**2  # square",
]

# Spaces right before a digit: SmolLM2's own tokenizer and llama.cpp's 'smollm' pre-tokenizer
# isolate digits first, so the space run stays one piece; transformers' GGUF conversion ignores
# the 'smollm' pre-type and splits GPT-2's way. We follow the model's own tokenizer.
SPACES_BEFORE_DIGIT = {"a  1": [81, 256, 33]}


@pytest.fixture(scope="module")
def ours():
  return Tokenizer.from_gguf()


@pytest.fixture(scope="module")
def theirs():
  pytest.importorskip("torch")
  from transformers import AutoTokenizer

  path = embedded_gguf_path()
  return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.real_weights
def test_special_ids(ours, theirs):
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 2)
  assert ours.vocab_size == len(theirs) == 49152
  assert (theirs.bos_token_id, theirs.eos_token_id) == (ours.bos_id, ours.eos_id)


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_transformers(ours, theirs, text):
  assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trips(ours, theirs, text):
  ids = ours.encode(text)
  assert ours.decode(ids) == text
  assert ours.decode(ids) == theirs.decode(ids)


def test_digits_are_isolated_after_spaces(ours):
  for text, ids in SPACES_BEFORE_DIGIT.items():
    assert ours.encode(text) == ids
    assert ours.decode(ids) == text


def test_add_bos(ours):
  assert ours.encode("hi", add_bos=True) == [1, *ours.encode("hi")]


def test_embedded_smollm2_adds_no_bos(ours):
  # Its GGUF says tokenizer.ggml.add_bos_token = False: model inputs stay as encoded.
  assert ours.add_bos is False and ours.input_bos_id is None
  text = "What is the score of the following review? review: great"
  assert ours.encode_prompt(text) == ours.encode(text)
  assert ours.encode_prompt(text, 4) == ours.encode(text)[-4:]


@pytest.mark.parametrize("post_processor, declared, expected", [
    (True, True, True),  # Llama-2's own files
    (True, None, True),  # no key: what transformers' encoding adds
    (False, True, True),  # the declared key wins (transformers 5 would ignore it)
    (True, False, False),
    (False, None, False),
])
def test_add_bos_from_an_hf_directory(llama2_tokenizer_dir, post_processor, declared, expected):
  tok = Tokenizer.for_model(tokenizer_path=llama2_tokenizer_dir(post_processor, declared))
  assert (tok.bos_id, tok.eos_id, tok.add_bos) == (1, 2, expected)
  assert tok.input_bos_id == (1 if expected else None)


def test_llama2_inputs_start_with_bos_exactly_once(llama2_tokenizer_dir):
  tok = Tokenizer.from_hf_dir(llama2_tokenizer_dir())
  text = "What is the score of the following review on a scale of 1 to 5? review: great"
  body = tok.encode(text)
  assert body[0] != 1  # encode itself adds nothing
  assert tok.encode_prompt(text) == [1, *body]
  assert tok.encode_prompt(text, 5) == [1, *body[-4:]]  # a cut keeps BOS and the end
  chat = tok.apply_chat_template([{"role": "user", "content": text}])
  assert chat.startswith("<s>[INST]")
  ids = tok.encode_prompt(chat)
  assert ids[0] == 1 and 1 not in ids[1:]  # the template's BOS is not doubled
  assert tok.encode_prompt(chat, 2) == [1, tok.encode(chat)[-1]]
  with pytest.raises(ValueError, match="no room"):
    tok.encode_prompt(text, 1)


def test_chat_template_matches_transformers(ours, theirs):
  chats = [
      [{"role": "user", "content": "Rate this review: 'loved it' 🤗"}],
      [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a\n\tb 12"},
       {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}],
  ]
  for messages in chats:
    for gen in (True, False):
      text = ours.apply_chat_template(messages, add_generation_prompt=gen)
      assert text == theirs.apply_chat_template(
          messages, tokenize=False, add_generation_prompt=gen
      )
      assert text.startswith("<|im_start|>system\n")
      assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
  assert ours.encode(ours.apply_chat_template(chats[0]))[:2] == [1, 9690]  # <|im_start|>system


def test_skip_special_tokens(ours):
  ids = ours.encode("<|im_start|>user\nhi<|im_end|>")
  assert ours.decode(ids, skip_special_tokens=True) == "user\nhi"


def test_from_hf_dir_matches(ours, theirs, tmp_path):
  theirs.save_pretrained(tmp_path)
  hf = Tokenizer.from_hf_dir(str(tmp_path))
  for text in TEXTS:
    assert hf.encode(text) == ours.encode(text) or text in SPACES_BEFORE_DIGIT
  assert (hf.bos_id, hf.eos_id, hf.pad_id, hf.vocab_size) == (1, 2, 2, 49152)
  assert hf.add_bos is False
  messages = [{"role": "user", "content": "hi"}]
  assert hf.apply_chat_template(messages) == ours.apply_chat_template(messages)


@pytest.mark.slow
def test_builds_without_torch():
  code = (
      "import sys; sys.modules['torch'] = None\n"
      "from oppu_jax.models.tokenizer import Tokenizer\n"
      "print(Tokenizer.from_gguf().encode('Hello 12'))\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[19556, 216, 33, 34]"


def test_missing_gguf_is_one_clear_line(tmp_path):
  with pytest.raises(ModelError, match="does not exist") as e:
    Tokenizer.from_gguf(str(tmp_path / "nope.gguf"))
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupted_gguf_is_one_clear_line(tmp_path, kind):
  bad = tmp_path / "bad.gguf"
  if kind == "garbage":
    bad.write_bytes(b"not a gguf file at all" * 100)
  else:
    with open(embedded_gguf_path(), "rb") as f:
      bad.write_bytes(f.read(200_000))  # cut inside the token list
  with pytest.raises(ModelError, match="bad.gguf") as e:
    Tokenizer.from_gguf(str(bad))
  assert "\n" not in str(e.value)


def test_vicuna_v1_1_is_fastchats_layout():
  """FastChat's "vicuna_v1.1": system, then "USER: q" and "ASSISTANT: a</s>" turns joined by a
  space after a user turn and nothing after "</s>", ending in "ASSISTANT:" to generate."""
  from oppu_jax.models.tokenizer import VICUNA_SYSTEM, vicuna_v1_1

  turns = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
           {"role": "user", "content": "q2"}]
  assert vicuna_v1_1(turns) == f"{VICUNA_SYSTEM} USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"
  assert vicuna_v1_1([{"role": "system", "content": "S"}, *turns[:1]],
                     add_generation_prompt=False) == "S USER: q1"
  with pytest.raises(ValueError, match="unknown role 'tool'"):
    vicuna_v1_1([{"role": "tool", "content": "x"}])
