"""History-format ablation (OPPU Table 3): each user's adapter trained on its full history
items, on their input side only (a review, an abstract) or their output side only (a score, a
title); OPPU k=0 and the non-personalized baseline, which reads no history."""

from __future__ import annotations

from oppu_jax.analysis import common
from oppu_jax.eval import metrics
from oppu_jax.errors import ConfigError
from oppu_jax.pipeline import run as run_lib
from oppu_jax.pipeline.settings import SETTINGS, variant

FORMATS = (("full items", ""), ("input side only", "input_only"),
           ("output side only", "output_only"))


def settings():
  oppu = SETTINGS["oppu_k0"]
  return [SETTINGS["non_personalized"], oppu,
          *(variant(oppu, mode.split("_")[0], history_mode=mode) for _, mode in FORMATS[1:])]


def run(exp, command: str) -> str:
  if not exp.task.aligned:
    raise ConfigError(f"config.analysis.name: history_format needs history items with an input "
                      f"and an output side; {exp.task.name}'s are not (use LaMP_2N/2M/3/4/5/6)")
  chosen = settings()
  run_lib.run_settings(exp, chosen)
  metric = common.primary_metric(exp.task.name)
  base = common.setting_metrics(exp, chosen[0])[metric]
  values = [common.setting_metrics(exp, s)[metric] for s in chosen[1:]]
  rows = [[label, v, metrics.better_sign(metric) * (v - base), s.name]
          for (label, _), v, s in zip(FORMATS, values, chosen[1:])]
  table = common.Table(
      f"{exp.task.name}: OPPU (k=0) by history format",
      ["history the adapter trains on", metric, "gain over non-personalized", "setting"], rows,
      f"Non-personalized {metric}: {base:.4f}. Full items follow config.data.history_mode "
      f"({exp.config.data.history_mode!r}); the one-sided ones are next-token training on that "
      f"field alone. {len(common.golds(exp))} queries of {len(exp.test_users)} users.")
  fig, (ax,) = common.figure()
  labels = [label for label, _ in FORMATS]
  for i, (label, v) in enumerate(zip(labels, values)):
    ax.bar(label, v, color=common.SHADES[i], edgecolor="black", hatch=common.HATCHES[i])
  ax.axhline(base, color="black", linestyle="--", linewidth=1, label="non-personalized")
  ax.set_ylabel(common.axis_label(metric))
  ax.set_title(f"{exp.task.name}: OPPU by history format")
  ax.legend(fontsize=8)
  data = {"metric": metric, "non_personalized": base, "formats": dict(zip(labels, values))}
  return common.save(exp, "history_format", table, fig, data, command)
