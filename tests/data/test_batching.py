import numpy as np
import pytest

from oppu_jax.data import batching

BOS, EOS, PAD = 1, 2, 2  # pad == eos, as SmolLM2 ships it


def encode(s):
  """A toy byte-level encoder (ids >= 10 so they never collide with the specials)."""
  return [10 + b for b in s.encode("utf-8")]


def targets(tokens, loss_mask):
  return [int(t) for t, m in zip(tokens, loss_mask) if m]


def test_loss_covers_answer_and_eos_only():
  e = batching.encode_pair("review: good", " 5", encode, eos_id=EOS, bos_id=BOS)
  assert e.tokens.dtype == np.int32 and e.loss_mask.dtype == bool
  assert e.tokens.tolist() == [BOS] + encode("review: good") + encode(" 5") + [EOS]
  assert targets(e.tokens, e.loss_mask) == encode(" 5") + [EOS]
  assert not e.loss_mask[: 1 + len(encode("review: good"))].any()


def test_first_token_is_never_a_target():
  e = batching.encode_pair("", "ab", encode, eos_id=EOS)
  assert e.loss_mask.tolist() == [False, True, True]
  t = batching.encode_text("abc", encode, eos_id=EOS)
  assert t.loss_mask.tolist() == [False, True, True, True]


def test_cutoff_cuts_the_prompt_from_the_left():
  e = batching.encode_pair("abcdefgh", "XY", encode, eos_id=EOS, bos_id=BOS, cutoff=8)
  # BOS + 4 prompt tokens + 2 answer + EOS = 8: the prompt keeps its end.
  assert e.tokens.tolist() == [BOS] + encode("efgh") + encode("XY") + [EOS]
  assert targets(e.tokens, e.loss_mask) == encode("XY") + [EOS]


def test_cutoff_middle_keeps_the_head():
  e = batching.encode_pair("abcdefgh", "XY", encode, eos_id=EOS, bos_id=BOS, cutoff=8,
                           keep_head=3)
  assert e.tokens.tolist() == [BOS] + encode("abc") + encode("h") + encode("XY") + [EOS]
  e = batching.encode_pair("abcdefgh", "XY", encode, eos_id=EOS, cutoff=5, keep_head=9)
  assert e.tokens.tolist() == encode("ab") + encode("XY") + [EOS]


def test_answer_is_cut_only_when_it_alone_does_not_fit():
  # The answer fits alone: the prompt may shrink to nothing, the answer stays whole.
  e = batching.encode_pair("abcdefgh", "VWXYZ", encode, eos_id=EOS, bos_id=BOS, cutoff=7)
  assert e.tokens.tolist() == [BOS] + encode("VWXYZ") + [EOS]
  # It does not: the prompt keeps half the room, the answer its start, and no EOS.
  e = batching.encode_pair("abcdefgh", "VWXYZ", encode, eos_id=EOS, bos_id=BOS, cutoff=5)
  assert e.tokens.tolist() == [BOS] + encode("gh") + encode("VW")
  assert targets(e.tokens, e.loss_mask) == encode("VW")
  with pytest.raises(ValueError, match="no room"):
    batching.encode_pair("a", "b", encode, eos_id=EOS, bos_id=BOS, cutoff=2)


def test_next_token_text():
  e = batching.encode_text("hello", encode, eos_id=EOS, bos_id=BOS)
  assert e.tokens.tolist() == [BOS] + encode("hello") + [EOS]
  assert targets(e.tokens, e.loss_mask) == encode("hello") + [EOS]
  e = batching.encode_text("hello", encode, eos_id=EOS, bos_id=BOS, cutoff=4)
  assert e.tokens.tolist() == [BOS] + encode("hel")


def test_bucket_length():
  buckets = (64, 128, 256)
  assert batching.bucket_length(1, buckets) == 64
  assert batching.bucket_length(64, buckets) == 64
  assert batching.bucket_length(65, (256, 64, 128)) == 128
  with pytest.raises(ValueError, match="exceeds the largest bucket 256"):
    batching.bucket_length(257, buckets)


def _user_examples(n, seed=0):
  rng = np.random.default_rng(seed)
  return [batching.encode_pair("p" * int(rng.integers(1, 40)), "a" * int(rng.integers(0, 5)),
                               encode, eos_id=EOS, bos_id=BOS) for _ in range(n)]


def test_make_batches_shapes_padding_and_coverage():
  examples = _user_examples(11)
  batches = batching.make_batches(examples, 4, (16, 32, 64), PAD, shuffle_seed=3)
  assert len(batches) == 3
  seen = []
  for b in batches:
    B, T = b["tokens"].shape
    assert B == 4 and T in (16, 32, 64)
    assert b["tokens"].dtype == np.int32 and b["positions"].dtype == np.int32
    assert b["loss_mask"].dtype == bool and b["attention_mask"].dtype == bool
    assert not (b["loss_mask"] & ~b["attention_mask"]).any()
    for row in range(B):
      n = int(b["attention_mask"][row].sum())
      assert b["attention_mask"][row, :n].all()  # right padding
      assert (b["tokens"][row, n:] == PAD).all()
      assert b["positions"][row].tolist() == list(range(n)) + [0] * (T - n)
      if n:
        seen.append(b["tokens"][row, :n].tolist())
      # T is the smallest bucket holding this batch's longest row.
    longest = int(b["attention_mask"].sum(1).max())
    assert T == batching.bucket_length(longest, (16, 32, 64))
  # Every example exactly once; the last batch's filler rows are fully masked.
  assert sorted(seen) == sorted(e.tokens.tolist() for e in examples)
  last = batches[-1]
  assert not last["attention_mask"][3:].any() and not last["loss_mask"][3:].any()


def test_pad_equal_to_eos_is_not_a_target():
  examples = [batching.encode_pair("ab", "c", encode, eos_id=EOS),
              batching.encode_pair("abcdef", "c", encode, eos_id=EOS)]
  (b,) = batching.make_batches(examples, 2, (16,), PAD, shuffle_seed=None)
  # The answer's EOS is a target; the identical pad ids after it are not.
  assert b["loss_mask"][0].tolist() == [False] * 2 + [True, True] + [False] * 12
  assert (b["tokens"][0, 3:] == EOS).all()


def test_make_batches_deterministic_and_user_length_mode():
  examples = _user_examples(9, seed=1)
  a = batching.make_batches(examples, 4, (16, 32, 64), PAD, shuffle_seed=7)
  b = batching.make_batches(examples, 4, (16, 32, 64), PAD, shuffle_seed=7)
  c = batching.make_batches(examples, 4, (16, 32, 64), PAD, shuffle_seed=8)
  assert all((x["tokens"] == y["tokens"]).all() for x, y in zip(a, b))
  assert any(x["tokens"].shape != y["tokens"].shape or (x["tokens"] != y["tokens"]).any()
             for x, y in zip(a, c))
  unshuffled = batching.make_batches(examples, 4, (16, 32, 64), PAD, shuffle_seed=None)
  assert unshuffled[0]["tokens"][0, : len(examples[0])].tolist() == examples[0].tokens.tolist()
  # "user": one T for all of the user's batches, from the user's longest example.
  u = batching.make_batches(examples, 4, (16, 32, 64), PAD, shuffle_seed=7, length="user")
  t_user = batching.bucket_length(max(len(e) for e in examples), (16, 32, 64))
  assert {x["tokens"].shape for x in u} == {(4, t_user)}
  assert batching.make_batches([], 4, (16,), PAD, shuffle_seed=0) == []
  with pytest.raises(ValueError, match="exceeds the largest bucket"):
    batching.make_batches(examples, 4, (8,), PAD, shuffle_seed=0)


def test_pad_to_batch():
  b = batching.collate(_user_examples(2), 64, PAD)
  p = batching.pad_to_batch(b, 5, PAD)
  assert p["tokens"].shape == (5, 64) and p["tokens"].dtype == np.int32
  assert (p["tokens"][2:] == PAD).all() and not p["attention_mask"][2:].any()
  assert not p["loss_mask"][2:].any() and (p["positions"][2:] == 0).all()
  assert batching.pad_to_batch(b, 2, PAD) is b
  with pytest.raises(ValueError):
    batching.pad_to_batch(b, 1, PAD)


def test_left_pad():
  out = batching.left_pad([[5, 6, 7], [8], []], 4, PAD)
  assert out["tokens"].tolist() == [[PAD, 5, 6, 7], [PAD, PAD, PAD, 8], [PAD] * 4]
  assert out["attention_mask"].tolist() == [[False, True, True, True],
                                            [False, False, False, True], [False] * 4]
  assert out["positions"].tolist() == [[0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 0, 0]]
  assert out["tokens"].dtype == np.int32 and out["positions"].dtype == np.int32
  with pytest.raises(ValueError, match="more than length 2"):
    batching.left_pad([[1, 2, 3]], 2, PAD)
