"""The run's report, from its prediction files: results.json, significance.json and results.md
(scored on the test queries that have golds; the others are named, not scored)."""

from __future__ import annotations

import glob
import json
import logging
import os

from oppu_jax import files
from oppu_jax.data import lamp
from oppu_jax.errors import DataError
from oppu_jax.eval import metrics, report, significance
from oppu_jax.pipeline import cluster
from oppu_jax.pipeline.experiment import Experiment, golds as golds_of, predictions_path


def write_report(exp: Experiment) -> dict:
  """results.json, significance.json and results.md from the predictions: returns
  {setting: {metric: value}}, scored on the test queries that have a gold (a split released
  without golds, as LaMP's test split, is predicted, not scored). A prediction file that lacks a
  test query is an error naming both."""
  queries = [q for u in exp.test_users for q in u.queries]
  golds = golds_of(exp.test_users)
  preds = {}
  for setting in exp.settings:
    path = predictions_path(exp, setting)
    preds[setting.name] = lamp.read_outputs(path)
    missing = [q.id for q in queries if q.id not in preds[setting.name]]
    if missing:
      raise DataError(f"{path}: no prediction for query id {missing[0]!r} ({len(missing)} of "
                      f"{len(queries)} missing; delete the file to predict again)")
  unscored = _unscored_note(exp, queries)
  if not golds:
    logging.warning("%s", unscored)
    if cluster.is_main():
      files.write_text(exp.path("results.md"), f"# {exp.task.name}\n\n{unscored}\n")
    return {}
  scored = {name: {i: p[i] for i in golds} for name, p in preds.items()}
  results = {name: metrics.evaluate(exp.task.name, golds, p) for name, p in scored.items()}
  tests = significance.grid_tests(exp.task.name, golds, scored, results, seed=exp.config.seed)
  if not cluster.is_main():
    return results
  if unscored:
    logging.warning("%s", unscored)
  files.write_json(exp.path("results.json"), results)
  files.write_json(exp.path("significance.json"), tests.to_json())
  users = sum(any(q.gold is not None for q in u.queries) for u in exp.test_users)
  table = (report.study_table if any(s.prompts == "study" for s in exp.settings)
           else report.markdown_table)
  files.write_text(exp.path("results.md"), table(
      exp.task.name, results, tests=tests, num_queries=len(golds), num_users=users)
      + (f"\n{unscored}\n" if unscored else "") + _cost_table(exp) + _figure_links(exp))
  return results


def _unscored_note(exp: Experiment, queries) -> str:
  """A line naming the splits whose queries have no gold ("" when every query has one)."""
  splits: dict[str, int] = {}
  for q in queries:
    if q.gold is None:
      splits[q.split or "?"] = splits.get(q.split or "?", 0) + 1
  if not splits:
    return ""
  which = ", ".join(f"{n} of split {s!r}" for s, n in splits.items())
  return (f"{sum(splits.values())} of {len(queries)} test queries have no gold ({which}: the "
          f"release ships no golds for it): predicted in {exp.path('predictions')}/<setting>.json"
          " (LaMP's outputs format, for the leaderboard), not scored.")


def _figure_links(exp: Experiment) -> str:
  """results.md's links to the analyses' tables and figures the workdir holds (each
  analysis/<name>.png beside its .md), in the order of their names."""
  found = sorted(os.path.basename(p)[:-len(".png")]
                 for p in glob.glob(exp.path("analysis", "*.png")) if files.is_done(p))
  if not found:
    return ""
  return "\nAnalyses: " + ", ".join(
      f"[{n}](analysis/{n}.md) ([figure](analysis/{n}.png))" for n in found) + "\n"


def _cost_table(exp: Experiment) -> str:
  """results.md's cost of each setting's adapters per user (costs.json: training, or for
  hyper_k0 generation) and the hypernetwork's one-time training (hyper_<base>.json), with the
  number of users after which it has paid for itself against OPPU's training."""
  if not files.is_done(exp.path("costs.json")):
    return ""
  with open(exp.path("costs.json")) as f:
    costs = json.load(f)  # (of several processes, joined: experiment.join_costs)
  lines = ["", "| adapters of | users | seconds | seconds per user |", "|---|---:|---:|---:|"]
  for name, c in costs.items():
    lines.append(f"| {name} | {c['users']} | {c['seconds']:.1f} | "
                 f"{c['seconds'] / c['users']:.2f} |")
  for path in sorted(glob.glob(exp.path("hyper_*.json"))):
    with open(path) as f:
      h = json.load(f)
    base = os.path.basename(path)[len("hyper_"):-len(".json")]
    line = (f"\nThe hypernetwork (base {base}) trained once on {h['training_users']} other "
            f"users in {h['seconds']:.1f} s.")
    oppu, gen = costs.get("oppu_k0"), costs.get("hyper_k0")
    if oppu and gen:
      saved = oppu["seconds"] / oppu["users"] - gen["seconds"] / gen["users"]
      line += (f" Against oppu_k0's training it pays off after {h['seconds'] / saved:,.0f} new "
               "users." if saved > 0 else " It saves no time per user against oppu_k0.")
    lines.append(line)
  lines.append("")
  return "\n".join(lines)
