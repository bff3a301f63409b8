"""Profile size against gain (the PEFT-vs-RAG study): each test user's improvement of its own
adapter over the non-personalized model (config.analysis.gain "signed": the task's metric on the
user's queries, signed so that + is better; "sign": the study's +1 / -1 with unchanged users left
out) against the size of the user's profile (history items); least-squares line
and a 95 % confidence interval of its slope (t distribution, n - 2 degrees of freedom). On a
study workdir the PEFT row is peft_r8, else OPPU's oppu_k0."""

from __future__ import annotations

import numpy as np
from scipy import stats

from oppu_jax.analysis import common
from oppu_jax.eval import metrics
from oppu_jax.errors import DataError
from oppu_jax.pipeline import run as run_lib
from oppu_jax.pipeline.settings import SETTINGS, STUDY


def slope_interval(x, y, level: float = 0.95) -> dict[str, float]:
  """OLS of y on x: slope, intercept, the slope's two-sided `level` interval, r and p."""
  fit = stats.linregress(np.asarray(x, float), np.asarray(y, float))
  t = stats.t.ppf(0.5 + level / 2, len(x) - 2)
  return {"slope": fit.slope, "intercept": fit.intercept, "low": fit.slope - t * fit.stderr,
          "high": fit.slope + t * fit.stderr, "r": fit.rvalue, "p": fit.pvalue}


def study_improvements(users, gains):
  """The PEFT-vs-RAG study's improvement (its §4): 1 where the user gains over the
  non-personalized model, -1 where it loses; users with no change are excluded."""
  kept = [(u, 1.0 if g > 0 else -1.0) for u, g in zip(users, gains) if g != 0]
  return [u for u, _ in kept], [g for _, g in kept]


def run(exp, command: str) -> str:
  study = any(s.prompts == "study" for s in exp.settings)
  grid = STUDY if study else SETTINGS
  base, peft = grid["non_personalized"], grid["peft_r8" if study else "oppu_k0"]
  run_lib.run_settings(exp, [base, peft])
  metric = common.primary_metric(exp.task.name)
  before, after = common.per_user(exp, base, metric), common.per_user(exp, peft, metric)
  users = [u for u in exp.test_users if u.id in before]
  gains = [metrics.better_sign(metric) * (after[u.id] - before[u.id]) for u in users]
  if exp.config.analysis.gain == "sign":  # the study's: +1 gain, -1 none; unchanged left out
    users, gains = study_improvements(users, gains)
  sizes = [len(u.history) for u in users]
  if len(users) < 3:
    raise DataError(f"profile_gain: a regression needs at least 3 test users with queries "
                    f"(this run has {len(users)}; raise config.data.num_test_users)")
  rows = [[u.id, n, before[u.id], after[u.id], g] for u, n, g in zip(users, sizes, gains)]
  line = slope_interval(sizes, gains)
  table = common.Table(
      f"{exp.task.name}: per-user gain of {peft.name} over {base.name} against profile size",
      ["user", "history items", f"{metric} {base.name}", f"{metric} {peft.name}",
       "gain (+ = better)"], rows,
      f"Least squares: gain = {line['intercept']:.4f} + {line['slope']:.5f} x items; slope 95 % "
      f"CI [{line['low']:.5f}, {line['high']:.5f}] (r = {line['r']:.3f}, p = {line['p']:.3f}, "
      f"{len(users)} users; gain: " + ("the study's +1 / -1, unchanged users left out). "
                                      if exp.config.analysis.gain == "sign" else
                                      "the metric's difference). ") + ("A CI that contains 0 shows no trend at this sample size."
                               if np.isfinite(line["low"]) else
                               "The interval is undefined: the gains do not vary."))
  fig, (ax,) = common.figure()
  ax.scatter(sizes, gains, color=common.SHADES[0], marker="o", label="users")
  grid_x = np.linspace(min(sizes), max(sizes), 50)
  ax.plot(grid_x, line["intercept"] + line["slope"] * grid_x, "--", color=common.SHADES[1],
          label=f"fit: slope {line['slope']:.4f} [{line['low']:.4f}, {line['high']:.4f}]")
  ax.axhline(0, color="black", linewidth=0.6)
  ax.set_xlabel("user profile size (history items)")
  ax.set_ylabel(f"gain in {common.METRIC_LABELS[metric]}")
  ax.set_title(f"{exp.task.name}: {peft.name} gain over {base.name}")
  ax.legend(fontsize=7)
  data = {"metric": metric, "users": [u.id for u in users], "sizes": sizes, "gains": gains,
          "fit": line, "base": base.name, "peft": peft.name}
  return common.save(exp, "profile_gain", table, fig, data, command)
