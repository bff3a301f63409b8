"""Token sequences with their loss span, and fixed-shape numpy batches for one user.

Conventions (the trainer and the scorer rely on them):
- `loss_mask[i]` marks the TARGET token: `tokens[i]` is predicted from `tokens[:i]`, i.e. by the
  logits at position i - 1 (HF's `labels` alignment). The loss is
  `sum(CE(logits[:, :-1], tokens[:, 1:]) * loss_mask[:, 1:])`. `loss_mask[:, 0]` is always False.
- Padding is described by `attention_mask` alone; `pad_id` is only filler, so pad == EOS (as in
  SmolLM2) is harmless: an EOS that ends an answer is in `loss_mask`, a pad never is.
- Prompt and answer are encoded separately and concatenated, so the answer span is exact; a
  space between them belongs to whichever string carries it (`" 3"` is not `"3"`).
- Cut-off: the prompt is cut first (its start, after `keep_head` tokens, i.e. from the left when
  keep_head=0, else from the middle); the answer is cut only when BOS + answer + EOS alone exceed
  the cut-off — then the prompt keeps at most half the cut-off, the answer keeps its start and
  loses its EOS (it did not end there).
- Training batches are RIGHT-padded; generation/scoring prompts are LEFT-padded (`left_pad`).
- A user's batch length T is a bucket chosen from that user's examples and the config only.
- Encoder-decoder models (T5): an example also carries `source`, the encoder input (the prompt
  and EOS); `tokens` is then the decoder input, [decoder start] answer EOS, with the loss on the
  answer and EOS, so the same alignment holds. Batches add source_tokens / source_mask [B, S],
  right-padded to the user's source bucket S.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses

import numpy as np

from oppu_jax.errors import ConfigError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Example:
  """One training sequence. tokens: int32 [n]; loss_mask: bool [n] (True on target tokens);
  source: int32 [m], the encoder input of an encoder-decoder model, else None."""

  tokens: np.ndarray
  loss_mask: np.ndarray
  source: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.tokens)


def encode_pair(
    prompt: str,
    answer: str,
    encode: Callable[[str], list[int]],
    *,
    eos_id: int,
    bos_id: int | None = None,
    cutoff: int | None = None,
    keep_head: int = 0,
) -> Example:
  """[BOS] prompt answer EOS, with the loss on the answer tokens and EOS only."""
  bos = [] if bos_id is None else [bos_id]
  if cutoff is not None and cutoff < len(bos) + 2:
    raise ConfigError(f"config.model.cutoff: {cutoff} leaves no room for a prompt and an answer")
  p, a, eos = list(encode(prompt)), list(encode(answer)), [eos_id]
  if cutoff is not None and len(bos) + len(p) + len(a) + 1 > cutoff:
    room = cutoff - len(bos)
    if len(a) + 1 <= room:
      p = _cut_prompt(p, room - len(a) - 1, keep_head)
    else:  # The answer alone does not fit.
      p = _cut_prompt(p, min(len(p), room // 2), keep_head)
      a, eos = a[: room - len(p)], []
  tokens = bos + p + a + eos
  mask = [False] * (len(bos) + len(p)) + [True] * (len(a) + len(eos))
  return _example(tokens, mask)


def encode_with_source(
    prompt: str,
    answer: str,
    encode: Callable[[str], list[int]],
    *,
    eos_id: int,
    decoder_start_id: int,
    source_cutoff: int | None = None,
    target_cutoff: int | None = None,
) -> Example:
  """Encoder input `prompt EOS` (too long: its start is cut, as decoder-only prompts are, so the
  task input at the end survives retrieved context); decoder input `[start] answer EOS` with the
  loss on answer and EOS (too long: the answer keeps its start and loses its EOS)."""
  for key, cut in (("model.cutoff", source_cutoff), ("model.target_cutoff", target_cutoff)):
    if cut is not None and cut < 2:
      raise ConfigError(f"config.{key}: {cut} leaves no room for a token and EOS")
  source = list(encode(prompt))
  if source_cutoff is not None:
    source = _cut_prompt(source, source_cutoff - 1, 0)
  body = list(encode(answer)) + [eos_id]
  if target_cutoff is not None and 1 + len(body) > target_cutoff:
    body = body[: target_cutoff - 1]
  example = _example([decoder_start_id] + body, [False] + [True] * len(body))
  return dataclasses.replace(example, source=np.asarray(source + [eos_id], np.int32))


def encode_text(
    text: str,
    encode: Callable[[str], list[int]],
    *,
    eos_id: int,
    bos_id: int | None = None,
    cutoff: int | None = None,
    add_eos: bool = True,
) -> Example:
  """Next-token example: the loss covers every text token (and EOS); cut-off keeps the start."""
  bos = [] if bos_id is None else [bos_id]
  if cutoff is not None and cutoff < len(bos) + 1:
    raise ConfigError(f"config.model.cutoff: {cutoff} leaves no room for the text")
  body = list(encode(text)) + ([eos_id] if add_eos else [])
  if cutoff is not None and len(bos) + len(body) > cutoff:
    body = body[: cutoff - len(bos)]  # A cut text did not end: its EOS goes with the cut.
  return _example(bos + body, [False] * len(bos) + [True] * len(body))


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n."""
  for b in sorted(buckets):
    if b >= n:
      return b
  raise ConfigError(f"config.model.seq_buckets: a sequence of {n} tokens exceeds the largest "
                    f"bucket {max(buckets)}; lower config.model.cutoff or add a bucket")


def make_batches(
    examples: Sequence[Example],
    batch_size: int,
    buckets: Sequence[int],
    pad_id: int,
    *,
    shuffle_seed: int | None,
    length: str = "batch",
    source_len: int = 0,
) -> list[Batch]:
  """One epoch of ONE user's examples as right-padded batches of shape [batch_size, T].

  shuffle_seed: permutes the examples (None keeps their order); derive it per user and epoch.
  length: "batch" picks T per batch (least padding); "user" uses one T for all of the user's
  batches (fewest shapes). Either way T depends on this user's examples and `buckets` only.
  The final short batch is filled with fully-masked rows (see `pad_to_batch`).
  Returns dicts: tokens int32 [B, T], loss_mask bool [B, T], attention_mask bool [B, T],
  positions int32 [B, T]; for examples with a `source`, also source_tokens int32 [B, S] and
  source_mask bool [B, S], S = `source_len`.
  """
  if length not in ("batch", "user"):
    raise ValueError(f"length must be 'batch' or 'user', got {length!r}")
  if not examples:
    return []
  order = np.arange(len(examples))
  if shuffle_seed is not None:
    order = np.random.default_rng(shuffle_seed).permutation(len(examples))
  user_t = bucket_length(max(len(e) for e in examples), buckets)
  batches = []
  for start in range(0, len(order), batch_size):
    rows = [examples[i] for i in order[start : start + batch_size]]
    t = user_t if length == "user" else bucket_length(max(len(e) for e in rows), buckets)
    batches.append(pad_to_batch(collate(rows, t, pad_id, source_len), batch_size, pad_id))
  return batches


def collate(examples: Sequence[Example], T: int, pad_id: int, source_len: int = 0) -> Batch:
  """Right-pads examples to length T: tokens, loss_mask, attention_mask, positions [len, T];
  with sources, source_tokens / source_mask right-padded to `source_len` [len, S]."""
  n = len(examples)
  tokens = np.full((n, T), pad_id, np.int32)
  loss_mask = np.zeros((n, T), bool)
  attention_mask = np.zeros((n, T), bool)
  for row, e in enumerate(examples):
    if len(e) > T:
      raise ValueError(f"example of {len(e)} tokens does not fit in length {T}")
    tokens[row, : len(e)] = e.tokens
    loss_mask[row, : len(e)] = e.loss_mask
    attention_mask[row, : len(e)] = True
  # Pads get position 0; they are masked out of attention and loss anyway.
  positions = np.where(attention_mask, np.arange(T, dtype=np.int32), 0).astype(np.int32)
  batch = {"tokens": tokens, "loss_mask": loss_mask, "attention_mask": attention_mask,
           "positions": positions}
  if examples and examples[0].source is not None:
    batch.update(_collate_sources(examples, source_len, pad_id))
  return batch


def _collate_sources(examples: Sequence[Example], S: int, pad_id: int) -> Batch:
  tokens = np.full((len(examples), S), pad_id, np.int32)
  mask = np.zeros((len(examples), S), bool)
  for row, e in enumerate(examples):
    if e.source is None or len(e.source) > S:
      raise ValueError(f"example {row}: source of {None if e.source is None else len(e.source)} "
                       f"tokens does not fit in length {S}")
    tokens[row, : len(e.source)] = e.source
    mask[row, : len(e.source)] = True
  return {"source_tokens": tokens, "source_mask": mask}


def pad_to_batch(batch: Batch, batch_size: int, pad_id: int) -> Batch:
  """Appends fully-masked rows (pad tokens, all masks False: weight zero) up to batch_size."""
  n = len(batch["tokens"])
  if n > batch_size:
    raise ValueError(f"batch has {n} rows, more than batch_size {batch_size}")
  if n == batch_size:
    return batch
  fill = {"tokens": pad_id, "source_tokens": pad_id, "loss_mask": False,
          "attention_mask": False, "source_mask": False, "positions": 0}
  out = {}
  for key, value in batch.items():
    extra = np.full((batch_size - n,) + value.shape[1:], fill.get(key, 0), value.dtype)
    out[key] = np.concatenate([value, extra])
  return out


def left_pad(prompts_tokens: Sequence[Sequence[int]], T: int, pad_id: int) -> Batch:
  """Left-padded prompts for generation/scoring: tokens int32, attention_mask bool, positions
  int32, all [len, T]; positions count from 0 at each row's first real token (pads get 0)."""
  n = len(prompts_tokens)
  tokens = np.full((n, T), pad_id, np.int32)
  attention_mask = np.zeros((n, T), bool)
  for row, p in enumerate(prompts_tokens):
    if len(p) > T:
      raise ValueError(f"prompt {row} has {len(p)} tokens, more than length {T}")
    if len(p):
      tokens[row, T - len(p) :] = p
      attention_mask[row, T - len(p) :] = True
  positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0).astype(np.int32)
  return {"tokens": tokens, "attention_mask": attention_mask, "positions": positions}


def _cut_prompt(p: list[int], budget: int, keep_head: int) -> list[int]:
  """The first min(keep_head, budget) tokens and the last rest of the budget."""
  if budget >= len(p):
    return p
  head = min(keep_head, budget)
  tail = budget - head
  return p[:head] + (p[len(p) - tail :] if tail else [])


def _example(tokens: list[int], mask: list[bool]) -> Example:
  loss_mask = np.asarray(mask, bool)
  if len(loss_mask):
    loss_mask[0] = False  # Nothing precedes the first token, so nothing predicts it.
  return Example(np.asarray(tokens, np.int32), loss_mask)
