"""results.md: the paper's Table 1 layout for one task — a row per setting, a column per metric,
the best value in bold, the second underlined, significance marks, and a caption that says what
was tested on how many queries and users. `study_table`: the PEFT-vs-RAG study's Table 1 layout
(a row per metric, the settings as columns grouped by approach)."""

from __future__ import annotations

from collections.abc import Mapping

from oppu_jax.eval import significance
from oppu_jax.eval.metrics import LOWER_IS_BETTER

METRIC_ORDER = ("accuracy", "f1", "mae", "rmse", "rouge-1", "rouge-L")
BASELINE_MARK, RAG_MARK = "*", "†"

# What each metric is, where our computation departs from (or pins down) the official script.
METRIC_NOTES = {
    "mae": "LaMP_3: a prediction that is no finite number within [1, 5] counts as the farther of 1 "
           "and 5 from the gold, as the official evaluator treats an unparsable one.",
    "rouge-1": "ROUGE: the plain mean over queries of rouge-score's F-measure (no stemmer); the "
               "official script reports `evaluate`'s bootstrap median of resampled means, which "
               "differs only by resampling noise.",
}


def markdown_table(task: str, results: Mapping[str, Mapping[str, float]], *,
                   tests: significance.GridTests | None = None, num_queries: int | None = None,
                   num_users: int | None = None) -> str:
  """The table and its caption. `tests` adds the marks; without it, values only."""
  metrics = [m for m in METRIC_ORDER if any(m in r for r in results.values())]
  ranks = {m: _ranks(m, [r[m] for r in results.values() if m in r]) for m in metrics}
  lines = [f"# {task}", "", "| setting | " + " | ".join(metrics) + " |",
           "|---|" + "---:|" * len(metrics)]
  for name, r in results.items():
    cells = []
    for m in metrics:
      cell = f"{r[m]:.4f}" + _marks(tests, name, m)
      rank = ranks[m].get(r[m]) if len(results) > 1 else None
      rank = None if rank == 1 and len(results) < 3 else rank  # a second of two is the last
      cells.append(f"**{cell}**" if rank == 0 else f"<u>{cell}</u>" if rank == 1 else cell)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines + ["", _caption(metrics, results, tests, num_queries, num_users)]) + "\n"


def _ranks(metric: str, values: list[float]) -> dict[float, int]:
  """value -> 0 for the best, 1 for the second best (ties share a rank)."""
  distinct = sorted(set(values), reverse=metric not in LOWER_IS_BETTER)
  return {v: i for i, v in enumerate(distinct[:2])}


def _marks(tests, setting: str, metric: str) -> str:
  if tests is None:
    return ""
  out = ""
  for mark, by_setting in ((BASELINE_MARK, tests.vs_baseline), (RAG_MARK, tests.vs_best_rag)):
    test = by_setting.get(setting, {}).get(metric)
    out += mark if test is not None and test.better else ""
  return out


def _caption(metrics, results, tests, num_queries, num_users) -> str:
  arrows = ", ".join(f"{m} {'lower' if m in LOWER_IS_BETTER else 'higher'}" for m in metrics)
  parts = []
  if num_queries is not None:
    parts.append(f"{num_queries} queries of {num_users} user{'s' * (num_users != 1)}.")
  parts.append(f"Best per metric in bold{', second underlined' * (len(results) > 2)} "
               f"({arrows} is better).")
  if tests is not None:
    parts.append(_tests_caption(metrics, tests))
  parts += [METRIC_NOTES[m] for m in metrics if m in METRIC_NOTES]
  return " ".join(parts)


def _tests_caption(metrics, tests) -> str:
  marks = []
  if tests.baseline:
    marks.append(f"{BASELINE_MARK} significantly better than {tests.baseline}")
  if tests.best_rag:
    marks.append(f"{RAG_MARK} significantly better than the best RAG setting ({tests.best_rag}, "
                 f"by {metrics[0]})")
  if not marks:
    return "No significance marks: the run has neither non_personalized nor a RAG setting."
  text = (f"{'; '.join(marks)}: two-sided paired t-test over queries, p < {significance.ALPHA} "
          "(on per-query correctness, absolute error, squared error or F-measure).")
  if "f1" in metrics:
    text += (f" F1 is no mean over queries: paired randomization test "
             f"({significance.RANDOMIZATION_ROUNDS:,} rounds, seeded), p < {significance.ALPHA}.")
  return text + " p-values: significance.json."


# The study's column groups, in its Table 1 order: (setting name prefix, group, column label).
STUDY_COLUMNS = (("non_personalized", "", "Non-personalized"),
                 ("peft_r", "PEFT", "r={}"), ("rag_", "RAG", "{}"), ("peft_rag_r", "PEFT+RAG",
                                                                    "r={}"))
RETRIEVER_LABELS = {"bm25": "BM25", "recency": "Recency", "dense": "Dense", "rspg": "RSPG"}


def study_table(task: str, results: Mapping[str, Mapping[str, float]], *,
                tests: significance.GridTests | None = None, num_queries: int | None = None,
                num_users: int | None = None) -> str:
  """The study's Table 1 for one task: one row per metric; columns Non-personalized | PEFT
  r=... | RAG BM25 / Recency / Dense / RSPG | PEFT+RAG r=...; bold best, underlined second."""
  metrics = [m for m in METRIC_ORDER if any(m in r for r in results.values())]
  names = list(results)
  header, groups = [], []
  for name in names:
    for prefix, group, label in STUDY_COLUMNS:
      if name == prefix or (prefix != "non_personalized" and name.startswith(prefix)
                            and not (prefix == "peft_r" and name.startswith("peft_rag"))):
        rest = name[len(prefix):]
        header.append(label.format(RETRIEVER_LABELS.get(rest, rest)))
        groups.append(group)
        break
    else:
      header.append(name)
      groups.append("")
  lines = [f"# {task}", "", "| metric | " + " | ".join(
      f"{g} {h}".strip() for g, h in zip(groups, header)) + " |",
           "|---|" + "---:|" * len(names)]
  for m in metrics:
    ranks = _ranks(m, [results[n][m] for n in names])
    cells = []
    for n in names:
      cell = f"{results[n][m]:.4f}" + _marks(tests, n, m)
      rank = ranks.get(results[n][m]) if len(names) > 1 else None
      rank = None if rank == 1 and len(names) < 3 else rank
      cells.append(f"**{cell}**" if rank == 0 else f"<u>{cell}</u>" if rank == 1 else cell)
    arrow = "↓" if m in LOWER_IS_BETTER else "↑"
    lines.append(f"| {m} {arrow} | " + " | ".join(cells) + " |")
  caption = _caption(metrics, results, tests, num_queries, num_users)
  if any(n.startswith("peft_rag") for n in names) and tests is not None and tests.best_rag:
    caption += (f" PEFT+RAG uses each user's PEFT adapter of that rank with the best RAG row's "
                f"retriever ({tests.best_rag}).")
  return "\n".join(lines + ["", caption]) + "\n"
