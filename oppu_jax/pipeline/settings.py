"""The paper's Table 1 grid: what each named setting feeds the model, and which base it uses.

Base variants (the paper's task adaptation): "B" trains on the query alone, "R" on the query and
k retrieved history items, "P" on the profile and retrieved items. Each setting is evaluated on
the base variant that matches its prompt shape.
"""

from __future__ import annotations

import dataclasses

from oppu_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Setting:
  name: str
  base: str  # "B" | "R" | "P"
  k: int  # retrieved history items in the prompt
  retrieval: str  # "bm25" | "random" (only read when k > 0)
  profile: bool  # prepend the user's profile (PAG)
  personal: bool  # train and plug in the user's own adapter (OPPU)


SETTINGS = {s.name: s for s in [
    Setting("non_personalized", "B", 0, "bm25", False, False),
    Setting("random_history", "R", 1, "random", False, False),
    Setting("rag_k1", "R", 1, "bm25", False, False),
    Setting("rag_k2", "R", 2, "bm25", False, False),
    Setting("rag_k4", "R", 4, "bm25", False, False),
    Setting("pag_k0", "P", 0, "bm25", True, False),
    Setting("pag_k1", "P", 1, "bm25", True, False),
    Setting("oppu_k0", "B", 0, "bm25", False, True),
    Setting("oppu_k1", "R", 1, "bm25", False, True),
    Setting("oppu_k2", "R", 2, "bm25", False, True),
    Setting("oppu_k4", "R", 4, "bm25", False, True),
    Setting("pag_oppu_k0", "P", 0, "bm25", True, True),
    Setting("pag_oppu_k1", "P", 1, "bm25", True, True),
]}


def parse_settings(spec: str) -> list[Setting]:
  """'non_personalized,oppu_k0' (or 'all') -> settings in the grid's order."""
  names = [n.strip() for n in spec.split(",") if n.strip()]
  if spec.strip() == "all":
    names = list(SETTINGS)
  unknown = [n for n in names if n not in SETTINGS]
  if unknown:
    raise ConfigError(f"config.settings: unknown setting(s) {unknown}; choose from "
                      f"{', '.join(SETTINGS)} or 'all'")
  if not names:
    raise ConfigError("config.settings: no setting given")
  return [SETTINGS[n] for n in SETTINGS if n in names]
