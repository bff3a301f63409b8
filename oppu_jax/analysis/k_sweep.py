"""Retrieval k sweep (OPPU Fig. 4): RAG and OPPU + RAG with k = config.analysis.ks retrieved
items (k = 0: non-personalized and OPPU alone). Each OPPU + RAG row has its own adapters,
trained with k retrieved items in their prompts, as Table 1's oppu_k1..k4 are."""

from __future__ import annotations

from oppu_jax.analysis import common
from oppu_jax.pipeline import run as run_lib
from oppu_jax.pipeline.settings import retrieval_setting


def run(exp, command: str) -> str:
  ks = sorted(set(int(k) for k in exp.config.analysis.ks))
  rag = [retrieval_setting(k, personal=False) for k in ks]
  oppu = [retrieval_setting(k, personal=True) for k in ks]
  run_lib.run_settings(exp, rag + oppu)
  metric = common.primary_metric(exp.task.name)
  series = {"RAG": [common.setting_metrics(exp, s)[metric] for s in rag],
            "OPPU + RAG": [common.setting_metrics(exp, s)[metric] for s in oppu]}
  rows = [[k, series["RAG"][i], series["OPPU + RAG"][i], rag[i].name, oppu[i].name]
          for i, k in enumerate(ks)]
  table = common.Table(
      f"{exp.task.name}: {metric} against retrieved items k", ["k", "RAG", "OPPU + RAG",
                                                              "RAG setting", "OPPU setting"],
      rows, f"BM25 over the user's own history; {len(common.golds(exp))} queries of "
      f"{len(exp.test_users)} users.")
  fig, (ax,) = common.figure()
  for i, (name, values) in enumerate(series.items()):
    ax.plot(ks, values, color=common.LINE_SHADES[i], linestyle=common.DASHES[i],
            marker=common.MARKERS[i], label=name)
  ax.set_xscale("symlog", base=2, linthresh=1)
  ax.set_xticks(ks, [str(k) for k in ks])
  ax.set_xlabel("retrieved history items k")
  ax.set_ylabel(common.axis_label(metric))
  ax.set_title(f"{exp.task.name}: retrieval k sweep")
  ax.legend(fontsize=8)
  return common.save(exp, "k_sweep", table, fig, {"metric": metric, "ks": ks, "series": series},
                     command)
