"""The two papers' grids: what each named setting feeds the model, and which base it uses.

OPPU's Table 1 (`--config.settings=all`). Base variants (the paper's task adaptation): "B"
trains on the query alone, "R" on the query and k retrieved history items, "P" on the profile
and retrieved items. Each setting is evaluated on the base variant that matches its prompt shape.

The PEFT-vs-RAG study's Table 1 (`--config.settings=study`): non-personalized; PEFT, one LoRA
per user at rank r (peft_r8..r64); RAG with k = 4 by BM25, recency, a dense retriever or RSPG;
PEFT + RAG (peft_rag_r8..r64: the user's peft_rN adapter, reused, under the best RAG row's
retriever, chosen by the task's first metric once the RAG rows are evaluated). Its prompts are
the study's (`prompts.build_study_prompt`). The study uses its LLM as it is, without task
adaptation, so its rows all sit on base "B" (with task adaptation off, the plain base).
"""

from __future__ import annotations

import dataclasses

from oppu_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Setting:
  name: str
  # Everything after the name by keyword only: the table reads `profile=False`, not a bare False.
  _: dataclasses.KW_ONLY
  base: str  # "B" | "R" | "P"
  k: int  # retrieved history items in the prompt
  retrieval: str  # "bm25" | "random" (only read when k > 0)
  profile: bool  # prepend the user's profile (PAG)
  personal: bool  # train and plug in the user's own adapter (OPPU)
  prompts: str = "oppu"  # "oppu" (OPPU's prompts) | "study" (the PEFT-vs-RAG study's Table 3)
  rank: int = 0  # the adapter's LoRA rank; 0: config.peft.rank
  adapters_of: str = ""  # evaluate with this setting's adapters (trained once, reused)
  # What an analysis varies (oppu_jax/analysis/); such a setting is named "<setting>@<variant>".
  history: str = ""  # "" (the whole history) | "shift" (the least query-similar items only)
  history_mode: str = ""  # the adapters' training pairs; "" = config.data.history_mode
  method: str = ""  # the PEFT method; "" = config.peft.method
  @property
  def adapter_setting(self) -> str:
    """The setting whose adapters this one plugs in."""
    return self.adapters_of or self.name


BEST = "best"  # retrieval of the study's PEFT + RAG rows: the best RAG row's retriever
STUDY_RANKS = (8, 16, 32, 64)
STUDY_RETRIEVERS = ("bm25", "recency", "dense", "rspg")

SETTINGS = {s.name: s for s in [
    Setting("non_personalized", base="B", k=0, retrieval="bm25", profile=False, personal=False),
    Setting("random_history", base="R", k=1, retrieval="random", profile=False, personal=False),
    Setting("rag_k1", base="R", k=1, retrieval="bm25", profile=False, personal=False),
    Setting("rag_k2", base="R", k=2, retrieval="bm25", profile=False, personal=False),
    Setting("rag_k4", base="R", k=4, retrieval="bm25", profile=False, personal=False),
    Setting("pag_k0", base="P", k=0, retrieval="bm25", profile=True, personal=False),
    Setting("pag_k1", base="P", k=1, retrieval="bm25", profile=True, personal=False),
    Setting("oppu_k0", base="B", k=0, retrieval="bm25", profile=False, personal=True),
    Setting("oppu_k1", base="R", k=1, retrieval="bm25", profile=False, personal=True),
    Setting("oppu_k2", base="R", k=2, retrieval="bm25", profile=False, personal=True),
    Setting("oppu_k4", base="R", k=4, retrieval="bm25", profile=False, personal=True),
    Setting("pag_oppu_k0", base="P", k=0, retrieval="bm25", profile=True, personal=True),
    Setting("pag_oppu_k1", base="P", k=1, retrieval="bm25", profile=True, personal=True),
]}
STUDY = {s.name: s for s in [
    Setting("non_personalized", base="B", k=0, retrieval="bm25", profile=False, personal=False,
            prompts="study"),
    *(Setting(f"peft_r{r}", base="B", k=0, retrieval="bm25", profile=False, personal=True,
              prompts="study", rank=r) for r in STUDY_RANKS),
    *(Setting(f"rag_{m}", base="B", k=4, retrieval=m, profile=False, personal=False,
              prompts="study") for m in STUDY_RETRIEVERS),
    *(Setting(f"peft_rag_r{r}", base="B", k=4, retrieval=BEST, profile=False, personal=True,
              prompts="study", rank=r, adapters_of=f"peft_r{r}") for r in STUDY_RANKS),
]}
GRIDS = {"all": SETTINGS, "study": STUDY}


def retrieval_setting(k: int, personal: bool) -> Setting:
  """OPPU's grid extended to any k: rag_k<k> (non_personalized at 0) or oppu_k<k>, as Table 1
  builds them (base R with retrieval, B without)."""
  if k == 0:
    return SETTINGS["oppu_k0" if personal else "non_personalized"]
  return Setting(f"{'oppu' if personal else 'rag'}_k{k}", base="R", k=k, retrieval="bm25",
                 profile=False, personal=personal)


def variant(setting: Setting, suffix: str, **changes) -> Setting:
  """`setting` with an analysis's changes, named "<name>@<suffix>" (its own predictions and
  adapters in the workdir); a setting reusing another's adapters reuses that one's variant."""
  adapters_of = f"{setting.adapters_of}@{suffix}" if setting.adapters_of else ""
  return dataclasses.replace(setting, name=f"{setting.name}@{suffix}", adapters_of=adapters_of,
                             **changes)


def parse_settings(spec: str) -> list[Setting]:
  """'non_personalized,oppu_k0', 'all' (OPPU's grid), 'study' (the PEFT-vs-RAG study's) or
  'study:peft_r8,rag_bm25' (some of the study's) -> settings in the grid's order."""
  grid, _, names = spec.strip().partition(":") if spec.strip().startswith("study") else (
      "all", "", spec)
  table = GRIDS[grid]
  names = [n.strip() for n in names.split(",") if n.strip()]
  if spec.strip() in GRIDS:
    names = list(table)
  unknown = [n for n in names if n not in table]
  if unknown:
    raise ConfigError(f"config.settings: unknown setting(s) {unknown}; choose from "
                      f"{', '.join(table)}, or 'all' / 'study' / 'study:<names>'")
  if not names:
    raise ConfigError("config.settings: no setting given")
  chosen = [table[n] for n in table if n in names]
  if any(s.retrieval == BEST for s in chosen) and not any(
      s.name.startswith("rag_") for s in chosen):
    raise ConfigError("config.settings: the peft_rag_* rows use the best rag_* row's retriever; "
                      "add at least one rag_* setting")
  return chosen
