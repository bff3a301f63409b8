"""What the analyses share: metrics read back from a workdir's predictions, per user or per
query; a markdown table; a matplotlib figure readable in grey-scale; and the three files an
analysis leaves — analysis/<name>.md (the table, linking the figure), <name>.png and <name>.json
(the numbers behind both, for tests and other tools)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from oppu_jax import files
from oppu_jax.data import lamp
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.eval import metrics
from oppu_jax.eval.metrics import LOWER_IS_BETTER
from oppu_jax.pipeline import experiment

ANALYSIS_DIR = "analysis"
# Grey-scale: shades far apart, and hatches / markers / dashes so nothing relies on colour.
SHADES = ("0.15", "0.55", "0.8", "0.35", "0.95")  # bars (with hatches)
LINE_SHADES = ("0.0", "0.5", "0.25", "0.6", "0.4")  # lines: dark enough to see when thin
HATCHES = ("", "//", "..", "xx", "\\\\")
MARKERS = ("o", "s", "D", "^", "v")
DASHES = ("-", "--", ":", "-.", (0, (3, 1, 1, 1, 1, 1)))
METRIC_LABELS = {"accuracy": "accuracy (share of queries)", "mae": "MAE (rating points)",
                 "rmse": "RMSE (rating points)", "rouge-1": "ROUGE-1 F (0-1)",
                 "rouge-L": "ROUGE-L F (0-1)", "f1": "macro F1 (0-1)"}


def axis_label(metric: str) -> str:
  """The metric with its unit and which way is better, for a plot's axis."""
  return f"{METRIC_LABELS[metric]}, {'lower' if metric in LOWER_IS_BETTER else 'higher'} = better"


def primary_metric(task_name: str) -> str:
  """The metric an analysis plots: the task's first (accuracy, MAE or ROUGE-1)."""
  kind = tasks_lib.get_task(task_name).metric
  return {"classification": "accuracy", "regression": "mae"}.get(kind, "rouge-1")


def golds(exp, users=None) -> dict[str, str]:
  return experiment.golds(users or exp.test_users)


def predictions(exp, setting) -> dict[str, str]:
  return lamp.read_outputs(experiment.predictions_path(exp, setting))


def setting_metrics(exp, setting, users=None) -> dict[str, float]:
  """The task's metrics of `setting` on the queries of `users` (default: every test user)."""
  g = golds(exp, users)
  p = predictions(exp, setting)
  return metrics.evaluate(exp.task.name, g, {i: p[i] for i in g})


def per_user(exp, setting, metric: str) -> dict[str, float]:
  """{user id: `metric` over that user's own queries} (RMSE: the root of the user's mean)."""
  p = predictions(exp, setting)
  out = {}
  for u in exp.test_users:
    g = golds(exp, [u])
    if g:
      out[u.id] = metrics.evaluate(exp.task.name, g, {i: p[i] for i in g})[metric]
  return out


@dataclasses.dataclass
class Table:
  title: str
  columns: list[str]
  rows: list[list[Any]]
  caption: str

  def markdown(self) -> str:
    lines = [f"| {' | '.join(self.columns)} |", "|---|" + "---:|" * (len(self.columns) - 1)]
    lines += [f"| {' | '.join(_cell(v) for v in row)} |" for row in self.rows]
    return "\n".join(lines)


def _cell(value) -> str:
  if isinstance(value, (float, np.floating)):
    return f"{value + 0.0:.4f}"  # + 0.0: no "-0.0000"
  return str(value)


def figure(ncols: int = 1, width: float = 5.0, height: float = 3.4):
  """A fresh matplotlib figure (the Agg backend: no display needed) and its axes."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), dpi=100, squeeze=False)
  for ax in axes[0]:
    ax.grid(True, color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
  return fig, axes[0]


def save(exp, name: str, table: Table, fig, data: dict, command: str) -> str:
  """Writes analysis/<name>.md, .png and .json (each atomically); returns the .md path."""
  import matplotlib.pyplot as plt

  directory = exp.path(ANALYSIS_DIR)
  os.makedirs(directory, exist_ok=True)
  png = os.path.join(directory, f"{name}.png")
  fig.tight_layout()
  with files.output(png) as tmp:
    fig.savefig(tmp, format="png")
  plt.close(fig)
  files.write_json(os.path.join(directory, f"{name}.json"), _plain(data))
  md = os.path.join(directory, f"{name}.md")
  files.write_text(md, "\n".join([
      f"# {table.title}", "", table.markdown(), "", table.caption, "",
      f"![{name}]({name}.png)", "", f"Made by: `{command}`", ""]))
  return md


def _plain(x):
  """numpy scalars / arrays -> JSON-ready Python values."""
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, np.ndarray):
    return _plain(x.tolist())
  if isinstance(x, np.generic):
    return x.item()
  return x
