"""The families' conventions (models/decoder_only.py, encoder_decoder.py): how a pair, a query
and a label become ids, and what a training batch hands the model. The scorers and the decoder
that use them are tested against transformers in tests/eval/."""

import dataclasses

import numpy as np

from oppu_jax.models import llama, t5_config


@dataclasses.dataclass
class Chars:
  """A tokenizer of one id per character (id = code point), EOS 2, BOS 1 when `add_bos`."""

  add_bos: bool = False
  eos_id: int = 2
  bos_id: int = 1

  def encode(self, text):
    return [ord(c) for c in text]

  @property
  def input_bos_id(self):
    return self.bos_id if self.add_bos else None

  def encode_prompt(self, text, max_len=None):
    head = [self.bos_id] if self.add_bos else []
    ids = self.encode(text)
    return head + (ids if max_len is None else ids[max(len(ids) - (max_len - len(head)), 0):])


def test_a_decoder_only_pair_is_one_sequence_with_the_loss_on_the_answer():
  conv = llama.tiny_config().conventions
  ex = conv.example("ab", "c", Chars(add_bos=True), cutoff=16)
  assert ex.tokens.tolist() == [1, ord("a"), ord("b"), ord(" "), ord("c"), 2]
  assert ex.loss_mask.tolist() == [False, False, False, True, True, True]
  assert ex.source is None
  text = conv.example("", "xy", Chars(), cutoff=16)  # no prompt: next-token on the text
  assert text.tokens.tolist() == [ord("x"), ord("y"), 2]
  assert text.loss_mask.tolist() == [False, True, True]  # the first token predicts, never is
  assert conv.query("abcdef", Chars(add_bos=True), cutoff=6, max_new_tokens=2) == [
      1, ord("d"), ord("e"), ord("f")]  # room for 2 new tokens; the prompt keeps its end
  assert conv.choice("4", Chars()) == [ord(" "), ord("4"), 2]
  assert conv.peft_task_type == "CAUSAL_LM" and conv.continues_prompt


def test_an_encoder_decoder_pair_puts_the_prompt_in_the_encoder():
  conv = t5_config.tiny_config(decoder_start_id=0).conventions
  ex = conv.example("abc", "d", Chars(), cutoff=3)
  assert ex.source.tolist() == [ord("b"), ord("c"), 2]  # cut from the start, then EOS
  assert ex.tokens.tolist() == [0, ord("d"), 2] and ex.loss_mask.tolist() == [False, True, True]
  assert conv.query("abcdef", Chars(), cutoff=4, max_new_tokens=100) == [
      ord("d"), ord("e"), ord("f"), 2]  # the decoder's budget is its own
  assert conv.choice("4", Chars()) == [ord("4"), 2]  # no leading space: the start token leads
  assert conv.peft_task_type == "SEQ_2_SEQ_LM" and not conv.continues_prompt
  batch = {k: np.zeros((1, 2)) for k in ("tokens", "positions", "attention_mask",
                                         "source_tokens", "source_mask")}
  assert set(conv.inputs(batch)["encoder"]) == {"tokens", "attention_mask"}
  assert "encoder" not in llama.tiny_config().conventions.inputs(batch)
