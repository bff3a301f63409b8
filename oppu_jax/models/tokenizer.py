"""Tokenizers for both model routes: a GGUF file (built from its metadata with the `tokenizers`
package, no torch) or a Hugging Face directory (via transformers).

`encode` never adds special tokens on its own (only BOS when asked): prompts that need them get
them from the chat template, so the GGUF and HF routes give the same ids for the same text.
`encode_prompt` (and `input_bos_id`, for the batching helpers) make a model input: it starts with
BOS exactly once when the checkpoint was trained so (`add_bos`: Llama-2 yes, SmolLM2 no).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Callable, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from oppu_jax.errors import ModelError
from oppu_jax.models.load import embedded_gguf_path

# GGUF token types (llama.cpp's llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4


class Tokenizer:
  """Text <-> token ids, special ids and the chat template of one model.

  pad_id is explicit: for SmolLM2 it equals eos_id, which is harmless because batching and losses
  use attention masks, never token ids, to find padding.
  add_bos: whether every model input starts with BOS, as the model was trained (a GGUF's
  `tokenizer.ggml.add_bos_token`; an HF directory's `tokenizer_config.json` `add_bos_token`).
  """

  def __init__(
      self,
      backend: tokenizers.Tokenizer,
      *,
      bos_id: int | None,
      eos_id: int,
      pad_id: int | None = None,
      render_chat: Callable[..., str] | None = None,
      add_bos: bool = False,
  ):
    if add_bos and bos_id is None:
      raise ModelError("the tokenizer says inputs start with BOS but has no BOS token")
    self.backend = backend
    self.bos_id = bos_id
    self.eos_id = eos_id
    self.pad_id = eos_id if pad_id is None else pad_id
    self.add_bos = add_bos
    self._render_chat = render_chat

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if add_bos:
      if self.bos_id is None:
        raise ValueError("this tokenizer has no BOS token")
      ids = [self.bos_id, *ids]
    return ids

  @property
  def input_bos_id(self) -> int | None:
    """The BOS id when model inputs start with one (`add_bos`), else None: what
    `batching.encode_pair` / `encode_text` take as `bos_id`."""
    return self.bos_id if self.add_bos else None

  def encode_prompt(self, text: str, max_len: int | None = None) -> list[int]:
    """`text` as a model input: with BOS first exactly once when `add_bos` (a chat template may
    have written it already); longer than `max_len` tokens, it keeps its end, BOS still first."""
    ids = self.encode(text)
    head = [] if self.input_bos_id is None else [self.input_bos_id]
    if head and ids[:1] == head:
      ids = ids[1:]
    if max_len is not None:
      if max_len <= len(head):
        raise ValueError(f"max_len {max_len} leaves no room for the prompt")
      ids = ids[max(len(ids) - (max_len - len(head)), 0):]
    return head + ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """messages: [{'role': 'system'|'user'|'assistant', 'content': str}, ...] -> prompt text."""
    if self._render_chat is None:
      raise ValueError("this tokenizer has no chat template")
    return self._render_chat(messages, add_generation_prompt=add_generation_prompt)

  @property
  def has_chat_template(self) -> bool:
    return self._render_chat is not None

  def with_chat_format(self, render: Callable[..., str]) -> "Tokenizer":
    """This tokenizer with another chat format (e.g. `vicuna_v1_1` for a checkpoint that ships
    none); the ids of plain text are unchanged."""
    return Tokenizer(self.backend, bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id,
                     render_chat=render, add_bos=self.add_bos)

  @classmethod
  def for_model(cls, model_path: str = "", tokenizer_path: str = "") -> "Tokenizer":
    """`tokenizer_path` if given, else the model's own (an HF directory's tokenizer files or a
    GGUF's metadata), else the embedded SmolLM2's (a checkpoint without tokenizer files)."""
    path = tokenizer_path or model_path
    if path and os.path.isdir(path):
      names = ("tokenizer.json", "tokenizer_config.json")
      if tokenizer_path or any(os.path.exists(os.path.join(path, n)) for n in names):
        return cls.from_hf_dir(path)
      logging.info("%s has no tokenizer files: using the embedded SmolLM2 tokenizer", path)
      path = ""
    return cls.from_gguf(path or None)

  @classmethod
  def from_gguf(cls, path: str | None = None) -> "Tokenizer":
    """From a GGUF file's metadata; None = the embedded SmolLM2."""
    path = path or embedded_gguf_path()
    meta = _read_gguf_tokenizer_metadata(path)
    if meta.get("tokenizer.ggml.model") != "gpt2":
      raise ModelError(
          f"{path}: GGUF tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported; "
          "only byte-level BPE ('gpt2') is"
      )
    try:
      backend = _byte_level_bpe(
          meta["tokenizer.ggml.tokens"],
          meta["tokenizer.ggml.merges"],
          meta.get("tokenizer.ggml.token_type") or [],
          meta.get("tokenizer.ggml.pre"),
      )
      eos_id = int(meta["tokenizer.ggml.eos_token_id"])
    except KeyError as e:
      raise ModelError(f"{path}: GGUF metadata lacks {e.args[0]!r}") from None
    except Exception as e:  # the tokenizers package rejects inconsistent vocab/merges
      raise ModelError(f"{path}: cannot build the tokenizer ({type(e).__name__}: {e})") from None
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    pad_id = meta.get("tokenizer.ggml.padding_token_id")
    # llama.cpp's default for an absent key is False for byte-level BPE, the only kind read here.
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    template = meta.get("tokenizer.chat_template")
    render = None
    if template:
      tokens = meta["tokenizer.ggml.tokens"]
      render = functools.partial(
          _render_jinja, _compile_template(template),
          bos_token=tokens[bos_id] if bos_id is not None else "", eos_token=tokens[eos_id],
      )
    return cls(
        backend,
        bos_id=None if bos_id is None else int(bos_id),
        eos_id=eos_id,
        pad_id=None if pad_id is None else int(pad_id),
        render_chat=render,
        add_bos=add_bos,
    )

  @classmethod
  def from_hf_dir(cls, path: str) -> "Tokenizer":
    """From a Hugging Face checkpoint directory (tokenizer.json or tokenizer.model)."""
    from transformers import AutoTokenizer

    try:
      hf = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ModelError(f"{path}: cannot load a tokenizer ({first_line})") from None
    render = None
    if getattr(hf, "chat_template", None):
      def render(messages, add_generation_prompt):
        return hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return cls(
        hf.backend_tokenizer,
        bos_id=hf.bos_token_id,
        eos_id=hf.eos_token_id,
        pad_id=hf.pad_token_id,
        render_chat=render,
        add_bos=_hf_adds_bos(path, hf),
    )


VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The "
                 "assistant gives helpful, detailed, and polite answers to the user's questions.")


def vicuna_v1_1(messages: list[dict], add_generation_prompt: bool = True) -> str:
  """Vicuna v1.1's prompt format (FastChat's "vicuna_v1.1"; Vicuna-7B, the OPPU paper's profile
  writer, ships no chat template): "SYSTEM USER: q ASSISTANT: a</s>USER: q2 ASSISTANT:", BOS
  left to `encode_prompt`."""
  system = VICUNA_SYSTEM
  if messages and messages[0]["role"] == "system":
    system, messages = messages[0]["content"], messages[1:]
  text = system + " "
  for m in messages:
    if m["role"] == "user":
      text += f"USER: {m['content']} "
    elif m["role"] == "assistant":
      text += f"ASSISTANT: {m['content']}</s>"
    else:
      raise ValueError(f"vicuna_v1_1: unknown role {m['role']!r}")
  return text + "ASSISTANT:" if add_generation_prompt else text.rstrip(" ")


def _hf_adds_bos(path: str, hf) -> bool:
  """tokenizer_config.json's `add_bos_token` where it is set (Llama-2: true), else whether
  transformers' own encoding with special tokens starts with BOS.

  Not `hf.add_bos_token`: transformers 5 drops the config key when a tokenizer.json exists (the
  attribute is then False even for Llama-2) and leaves BOS to tokenizer.json's post-processor;
  transformers 4 applied the key. The key is the checkpoint's declared setting, so it wins.
  """
  config_path = os.path.join(path, "tokenizer_config.json")
  if os.path.exists(config_path):
    try:
      with open(config_path, encoding="utf-8") as f:
        declared = json.load(f).get("add_bos_token")
    except (OSError, ValueError, AttributeError) as e:
      raise ModelError(f"{config_path}: unreadable ({type(e).__name__}: {e})") from None
    if declared is not None:
      return bool(declared)
  if hf.bos_token_id is None:
    return False
  with_special = hf.encode("a", add_special_tokens=True)
  plain = hf.encode("a", add_special_tokens=False)
  return with_special[:1] == [hf.bos_token_id] and plain[:1] != [hf.bos_token_id]


def _read_gguf_tokenizer_metadata(path: str) -> dict:
  """The `tokenizer.*` metadata of a GGUF as Python values (strings, ints, lists)."""
  import os

  import gguf

  if not os.path.exists(path):
    raise ModelError(f"tokenizer path {path!r} does not exist: give a .gguf file")
  try:
    reader = gguf.GGUFReader(path)
    meta = {}
    for name, field in reader.fields.items():
      if name.startswith("tokenizer."):
        meta[name] = field.contents()
  except Exception as e:  # gguf raises ValueError, struct.error, IndexError, ... on bad bytes
    raise ModelError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
  return meta


@functools.cache
def _byte_alphabet() -> dict[int, str]:
  """GPT-2's byte -> printable character table, which byte-level vocabularies are spelled in."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def _byte_level_bpe(tokens, merges, token_types, pre_type) -> tokenizers.Tokenizer:
  alphabet = _byte_alphabet()
  letters = set(alphabet.values())
  # llama.cpp writes some files' tokens as raw UTF-8; the BPE model needs them byte-spelled.
  spelled = [
      t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8")) for t in tokens
  ]
  vocab = {t: i for i, t in enumerate(spelled)}
  pairs = [tuple(m.split(" ", 1)) for m in merges]
  backend = tokenizers.Tokenizer(models.BPE(vocab, pairs, fuse_unk=False))
  backend.pre_tokenizer = _pre_tokenizer(pre_type)
  backend.decoder = decoders.ByteLevel()

  # Control tokens (<|im_start|>, ...) must stay whole in text; they are skipped by
  # decode(skip_special_tokens=True). User-defined ones stay whole but are ordinary text.
  special = [tokenizers.AddedToken(t, special=True, normalized=False)
             for t, k in zip(tokens, token_types) if k == _CONTROL and t in vocab]
  user = [tokenizers.AddedToken(t, special=False, normalized=False)
          for t, k in zip(tokens, token_types) if k == _USER_DEFINED and t in vocab]
  if special:
    backend.add_special_tokens(special)
  if user:
    backend.add_tokens(user)
  return backend


def _pre_tokenizer(pre_type: str | None):
  """How text is split before BPE, after llama.cpp's `tokenizer.ggml.pre` types.

  'smollm' first isolates every digit (as SmolLM2's own tokenizer.json does with
  Digits(individual_digits=True)) and then applies GPT-2's split; plain 'gpt2' (and unknown types)
  use GPT-2's split alone.
  """
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre_type == "smollm":
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
  return byte_level


@functools.cache
def _compile_template(source: str):
  # transformers renders chat templates in a sandbox with these whitespace rules; keep them so
  # templates written for it render the same text here.
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message):
    raise ValueError(message)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  env.globals["raise_exception"] = raise_exception
  return env.from_string(source)


def _render_jinja(template, messages, *, add_generation_prompt, bos_token, eos_token) -> str:
  return template.render(
      messages=messages, add_generation_prompt=add_generation_prompt,
      bos_token=bos_token, eos_token=eos_token,
  )
