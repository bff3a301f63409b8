"""PEFT methods (OPPU Fig. 6): OPPU k=0 with LoRA, (IA)3 and prompt tuning adapters per user,
with each method's trainable parameters and stored bytes per user, read from the saved HF PEFT
files."""

from __future__ import annotations

import os

import numpy as np
from safetensors.numpy import load_file

from oppu_jax.analysis import common
from oppu_jax.peft.hf_format import WEIGHTS_NAME
from oppu_jax.pipeline import experiment, run as run_lib
from oppu_jax.pipeline.settings import SETTINGS, variant

METHODS = (("LoRA", "lora"), ("(IA)3", "ia3"), ("prompt tuning", "prompt_tuning"))


def settings(configured_method: str):
  """OPPU k=0 per method; the configured method's is oppu_k0 itself (its adapters are reused)."""
  oppu = SETTINGS["oppu_k0"]
  return [oppu if m == configured_method else variant(oppu, m, method=m) for _, m in METHODS]


def adapter_size(exp, setting) -> tuple[int, float]:
  """(trainable parameters per user, mean bytes of adapter_model.safetensors per user)."""
  params, sizes = set(), []
  for u in exp.test_users:
    path = os.path.join(experiment.adapter_dir(exp, setting, u.id), WEIGHTS_NAME)
    params.add(sum(t.size for t in load_file(path).values()))
    sizes.append(os.path.getsize(path))
  return max(params), float(np.mean(sizes))


def run(exp, command: str) -> str:
  chosen = settings(exp.config.peft.method)
  run_lib.run_settings(exp, [SETTINGS["non_personalized"], *chosen])
  metric = common.primary_metric(exp.task.name)
  base = common.setting_metrics(exp, SETTINGS["non_personalized"])[metric]
  rows, data = [], {"metric": metric, "non_personalized": base, "methods": {}}
  for (label, _), setting in zip(METHODS, chosen):
    value = common.setting_metrics(exp, setting)[metric]
    params, size = adapter_size(exp, setting)
    rows.append([label, value, f"{params:,}", f"{size / 1024:.1f}", setting.name])
    data["methods"][label] = {"value": value, "params": params, "bytes": size,
                              "setting": setting.name}
  p = exp.config.peft
  table = common.Table(
      f"{exp.task.name}: OPPU (k=0) by PEFT method",
      ["method", metric, "trainable parameters per user", "KiB per user (safetensors)",
       "setting"], rows,
      f"Non-personalized {metric}: {base:.4f}. LoRA r={p.rank} on {', '.join(p.targets)}; "
      f"(IA)3 on its default targets; prompt tuning with {p.num_virtual_tokens} virtual tokens; "
      f"the same training recipe for all. {len(common.golds(exp))} queries of "
      f"{len(exp.test_users)} users.")
  fig, (ax,) = common.figure()
  for i, ((label, _), row) in enumerate(zip(METHODS, rows)):
    ax.bar(f"{label}\n{row[2]} params", row[1], color=common.SHADES[i], edgecolor="black",
           hatch=common.HATCHES[i])
  ax.axhline(base, color="black", linestyle="--", linewidth=1, label="non-personalized")
  ax.set_ylabel(common.axis_label(metric))
  ax.set_title(f"{exp.task.name}: OPPU by PEFT method")
  ax.tick_params(axis="x", labelsize=8)
  ax.legend(fontsize=8)
  return common.save(exp, "peft_methods", table, fig, data, command)
