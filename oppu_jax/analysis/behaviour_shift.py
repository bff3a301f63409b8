"""Behaviour shift (OPPU §5, Table 2): every method again with each test user's history cut to
the items least similar to the user's queries (dense cosine, config.analysis.shift_keep of them);
the adapters are trained on the cut history too, as the paper's are. The drop per method shows
which methods lean on relevant history."""

from __future__ import annotations

from oppu_jax.analysis import common
from oppu_jax.eval import metrics
from oppu_jax.pipeline import run as run_lib, shift
from oppu_jax.pipeline.settings import SETTINGS, variant

METHODS = (("RAG (k=1)", "rag_k1"), ("PAG (k=0)", "pag_k0"), ("OPPU (k=0)", "oppu_k0"),
           ("OPPU (k=1)", "oppu_k1"))


def settings(keep: float):
  """non_personalized, the methods on the whole history, the methods on the cut history."""
  full = [SETTINGS[name] for _, name in METHODS]
  suffix = shift.shift_suffix(keep)
  return [SETTINGS["non_personalized"], *full,
          *(variant(s, suffix, history="shift") for s in full)]


def run(exp, command: str) -> str:
  all_settings = settings(exp.config.analysis.shift_keep)
  run_lib.run_settings(exp, all_settings)
  metric = common.primary_metric(exp.task.name)
  base = common.setting_metrics(exp, all_settings[0])[metric]
  n = len(METHODS)
  rows, data = [], {"metric": metric, "non_personalized": base, "methods": {}}
  for (label, _), full, shifted in zip(METHODS, all_settings[1:1 + n], all_settings[1 + n:]):
    a = common.setting_metrics(exp, full)[metric]
    b = common.setting_metrics(exp, shifted)[metric]
    rows.append([label, a, b, b - a, metrics.better_sign(metric) * (b - base)])
    data["methods"][label] = {"full": a, "shift": b, "change": b - a, "setting": full.name,
                              "shifted_setting": shifted.name}
  keep = exp.config.analysis.shift_keep
  kept = sum(len(u.history) for u in shift.users_of(exp, all_settings[-1]))
  total = sum(len(u.history) for u in exp.test_users)
  data.update(keep=keep, items_kept=kept, items_total=total)
  table = common.Table(
      f"{exp.task.name}: behaviour shift", ["method", f"{metric} (full history)",
                                            f"{metric} (shifted)", "change",
                                            "shifted vs non-personalized (+ = better)"],
      rows,
      f"Shifted: each test user keeps the {100 * keep:.0f} % of its history least similar to "
      f"its queries ({kept} of {total} items; highest all-MiniLM-L6-v2 cosine to any of the "
      f"user's queries), for retrieval, the PAG profile and the adapter's training. "
      f"Non-personalized {metric}: {base:.4f} (it reads no history). "
      f"{len(common.golds(exp))} queries of {len(exp.test_users)} users.")
  fig, (ax,) = common.figure()
  labels = [r[0] for r in rows]
  ax.bar(labels, [r[3] for r in rows], color=common.SHADES[1], edgecolor="black",
         hatch=common.HATCHES[1])
  ax.axhline(0, color="black", linewidth=0.8)
  ax.set_ylabel(f"change in {common.METRIC_LABELS[metric]}\n(shifted - full history)")
  worse = "up" if metrics.better_sign(metric) < 0 else "down"
  ax.set_title(f"{exp.task.name}: behaviour shift ({worse} = worse)")
  ax.tick_params(axis="x", labelsize=8)
  return common.save(exp, "behaviour_shift", table, fig, data, command)
