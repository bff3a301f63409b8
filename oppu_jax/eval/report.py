"""results.md: the setting x metric table, with the best value per metric in bold."""

from __future__ import annotations

# Lower is better for these; higher for the rest.
LOWER_IS_BETTER = ("mae", "rmse")
METRIC_ORDER = ("accuracy", "f1", "mae", "rmse", "rouge-1", "rouge-L")


def markdown_table(task: str, results: dict[str, dict[str, float]]) -> str:
  metrics = [m for m in METRIC_ORDER if any(m in r for r in results.values())]
  best = {}
  for m in metrics:
    values = [r[m] for r in results.values() if m in r]
    best[m] = min(values) if m in LOWER_IS_BETTER else max(values)
  lines = [f"# {task}", "", "| setting | " + " | ".join(metrics) + " |",
           "|---|" + "---:|" * len(metrics)]
  for name, r in results.items():
    cells = []
    for m in metrics:
      v = f"{r[m]:.4f}"
      cells.append(f"**{v}**" if r[m] == best[m] and len(results) > 1 else v)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  arrows = ", ".join(f"{m} {'lower' if m in LOWER_IS_BETTER else 'higher'}" for m in metrics)
  lines += ["", f"Best per metric in bold ({arrows} is better)."]
  return "\n".join(lines) + "\n"

