"""How to decode: the settings every generation call takes, as one value checked when made
(`generate.generate`, `eval.decode.generate_for_rows`, `eval.profiles.user_profiles`)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

DEFAULT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048)
METHODS = ("greedy", "sample", "beam")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decoding:
  """How to decode, checked when made.

  method: 'greedy'; 'sample' (temperature, then top_k (0 = off), then top_p (1.0 = off), as
    transformers orders them; draws depend on `seed`); 'beam' (num_beams, length_penalty, as
    transformers' beam search with early_stopping=False).
  batch_size: prompts per compiled batch; prompt_buckets: the lengths prompts are left-padded to.
  """

  max_new_tokens: int
  method: str = "greedy"
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  num_beams: int = 4
  length_penalty: float = 1.0
  seed: int = 0
  batch_size: int = 8
  prompt_buckets: Sequence[int] = DEFAULT_BUCKETS

  def __post_init__(self):
    # A tuple, so the value stays hashable when given a list.
    object.__setattr__(self, "prompt_buckets", tuple(self.prompt_buckets))
    if self.method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.method == "sample" and not self.temperature > 0:
      raise ValueError(f"sampling needs temperature > 0, got {self.temperature}")
    if self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got {self.top_k}, {self.top_p}")
    if self.method == "beam" and self.num_beams < 1:
      raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")

  @classmethod
  def from_config(cls, eval_config, seed: int = 0) -> Decoding:
    """The settings of a run's `config.eval` (its `decoding` names the method); `seed` is the
    run's (config.seed)."""
    e = eval_config
    return cls(method=e.decoding, max_new_tokens=e.max_new_tokens, temperature=e.temperature,
               top_k=e.top_k, top_p=e.top_p, num_beams=e.num_beams, seed=seed,
               batch_size=e.batch_size)
