"""User activity levels (OPPU Fig. 3): the test users in equal-count buckets by history length
(config.analysis.buckets), each method's metric per bucket. The analysis recipe
(`configs/analysis.py`) picks test users spread over history lengths; with OPPU's most-active
users the buckets are narrow."""

from __future__ import annotations

import numpy as np

from oppu_jax.analysis import common
from oppu_jax.pipeline import run as run_lib
from oppu_jax.pipeline.settings import SETTINGS

METHODS = (("non-personalized", "non_personalized"), ("RAG (k=1)", "rag_k1"),
           ("OPPU (k=0)", "oppu_k0"), ("OPPU + RAG (k=1)", "oppu_k1"))


def buckets(users, n: int) -> list[list]:
  """Users sorted by history length, shortest first, cut into n groups of (nearly) equal size."""
  ordered = sorted(users, key=lambda u: (len(u.history), u.id))
  return [list(part) for part in np.array_split(np.array(ordered, dtype=object), n) if len(part)]


def user_groups(users, n: int, cold_limit: int) -> list[list]:
  """The cold-start users (at most `cold_limit` history items: config.cold_start, not trained)
  as a bucket of their own, if any, then the others in n equal-count buckets."""
  cold = sorted((u for u in users if len(u.history) <= cold_limit),
                key=lambda u: (len(u.history), u.id))
  return ([cold] if cold else []) + buckets([u for u in users if u not in cold], n)


def run(exp, command: str) -> str:
  chosen = [SETTINGS[name] for _, name in METHODS]
  run_lib.run_settings(exp, chosen)
  metric = common.primary_metric(exp.task.name)
  limit = exp.config.cold_start.max_items
  groups = user_groups([u for u in exp.test_users if common.golds(exp, [u])],
                       exp.config.analysis.buckets, limit)
  cold = groups[0] if groups and len(groups[0][-1].history) <= limit else None
  rows, series = [], {label: [] for label, _ in METHODS}
  labels = []
  for group in groups:
    lengths = [len(u.history) for u in group]
    label = f"{min(lengths)}-{max(lengths)}" + (" (cold start)" if group is cold else "")
    labels.append(label)
    row = [label, len(group), len(common.golds(exp, group))]
    for (name, _), setting in zip(METHODS, chosen):
      value = common.setting_metrics(exp, setting, group)[metric]
      series[name].append(value)
      row.append(value)
    rows.append(row)
  table = common.Table(
      f"{exp.task.name}: {metric} by user activity",
      ["history items", "users", "queries", *(label for label, _ in METHODS)], rows,
      f"Test users in {len(groups)} buckets by history length: "
      + (f"the cold-start users (at most {limit} items, config.cold_start), then " if cold else "")
      + f"equal-count buckets (the paper: 20 users per range); {metric} over each bucket's "
      "queries.")
  fig, (ax,) = common.figure()
  x = np.arange(len(labels))
  for i, (name, values) in enumerate(series.items()):
    ax.plot(x, values, color=common.LINE_SHADES[i], linestyle=common.DASHES[i],
            marker=common.MARKERS[i], label=name)
  ax.set_xticks(x, labels)
  ax.set_xlabel("history length of the bucket's users (items)")
  ax.set_ylabel(common.axis_label(metric))
  ax.set_title(f"{exp.task.name}: users by activity level")
  ax.legend(fontsize=8)
  data = {"metric": metric, "buckets": labels, "series": series,
          "users": [[u.id for u in g] for g in groups]}
  return common.save(exp, "activity", table, fig, data, command)
