"""Efficiency (OPPU Appendix C, Fig. 8): one user's training time against the number of its
history items (prefixes of the longest test history; the paper reports a linear trend) and
against the LoRA rank, each fitted by least squares; the storage per user of each PEFT method.

Timed here, one user at a time (one slot), on the plain base weights (time does not depend on
their values). A user's time is the wall time of its steps (between the trainer's progress
reports), including its entry and its adapter's hand-over; compilation is paid by an untimed
warm-up user per batch shape. The timings are kept in analysis/efficiency_timings.json: a rerun
re-plots them, and deleting that file measures again."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import jax
import numpy as np

from oppu_jax import files
from oppu_jax.analysis import common
from oppu_jax.peft import hf_format
from oppu_jax.pipeline import examples
from oppu_jax.pipeline import training
from oppu_jax.pipeline.settings import SETTINGS
from oppu_jax.train import multi_user

METHODS = ("lora", "ia3", "prompt_tuning")
WARM_UP = "warm-up/"


def timed_training(exp, model, setting, users) -> list[dict]:
  """Trains each of `users` alone (one slot); per user its steps and seconds. Each batch shape's
  longest user is trained twice, first as an untimed warm-up that pays for the compilations."""
  c = exp.config
  plans = [training.make_plan(exp, u.id, examples.user_training_pairs(
      exp.task, u, setting, None, seed=c.seed, history_mode=setting.history_mode or
      c.data.history_mode), c.train.batch_size, c.train.epochs, c.train.grad_accum)
           for u in users]
  longest = {}
  for p in plans:  # the scheduler trains a shape's plans longest first, ties in given order
    if p.shape_key not in longest or p.total_steps > longest[p.shape_key].total_steps:
      longest[p.shape_key] = p
  warm = [dataclasses.replace(p, user_id=f"{WARM_UP}{p.user_id}") for p in longest.values()]
  stamps: list[tuple[float, int]] = []  # (time after the step, users done before it)
  order: list[str] = []
  done_before = [0]

  def on_step(report):
    stamps.append((time.perf_counter(), done_before[0]))
    done_before[0] = report.users_done

  method = training.build_method(exp, model, setting)
  config = training.train_config(exp, c.train.learning_rate, 1, schedule="exact")
  start = time.perf_counter()
  multi_user.train_users(model, method, warm + plans, config, progress=on_step,
                         on_user_done=lambda r: order.append(r.user_id))
  durations = np.diff([start] + [t for t, _ in stamps])
  owners = np.array([order[k] for _, k in stamps])
  shape_of = {p.user_id: p.shape_key for p in warm + plans}
  firsts = {}
  for uid in order:
    firsts.setdefault(shape_of[uid], uid)
  if not all(uid.startswith(WARM_UP) for uid in firsts.values()):  # the scheduler's order moved
    raise AssertionError(f"efficiency: a timed user trained first in its shape: {firsts}")
  return [{"user": p.user_id, "steps": p.total_steps,
           "seconds": float(durations[owners == p.user_id].sum()), "shape": list(p.shape_key)}
          for p in plans]


def storage(exp, model) -> dict[str, dict]:
  """Per method: trainable parameters and bytes of one user's saved adapter (shapes only)."""
  out = {}
  for name in METHODS:
    setting = dataclasses.replace(SETTINGS["oppu_k0"], method=name)
    method = training.build_method(exp, model, setting)
    adapter = method.init(model.weight_table(), jax.random.PRNGKey(0), model.embed[...])
    with tempfile.TemporaryDirectory() as tmp:
      hf_format.save_adapter(os.path.join(tmp, "a"), method, adapter, model.weight_table(),
                             model_config=model.config)
      path = os.path.join(tmp, "a", hf_format.WEIGHTS_NAME)
      out[name] = {"bytes": os.path.getsize(path),
                   "params": int(sum(np.size(x) for x in jax.tree.leaves(adapter)))}
  return out


def measure(exp) -> dict:
  c = exp.config
  model = exp.base_model
  longest = max(exp.test_users, key=lambda u: (len(u.history), u.id))
  sizes = sorted({min(int(n), len(longest.history)) for n in c.analysis.efficiency_items})
  prefixes = [dataclasses.replace(longest, id=f"{longest.id}[:{n}]", history=longest.history[:n])
              for n in sizes]
  oppu = dataclasses.replace(SETTINGS["oppu_k0"], method="lora")
  by_items = timed_training(exp, model, oppu, prefixes)
  for row in by_items:
    row["items"] = int(row["user"].rsplit(":", 1)[1].rstrip("]"))
  by_rank = []
  for r in c.analysis.efficiency_ranks:
    row = timed_training(exp, model, dataclasses.replace(oppu, rank=int(r)), [longest])[0]
    by_rank.append({**row, "rank": int(r)})
  return {"user": longest.id, "rank_items": len(longest.history),
          "by_items": sorted(by_items, key=lambda r: r["items"]),
          "by_rank": by_rank, "storage": storage(exp, model), "devices": str(jax.devices()[0]),
          "epochs": c.train.epochs, "batch_size": c.train.batch_size}


def fit(x, y) -> tuple[float, float, float]:
  """Least squares y = a + b x -> (a, b, R^2)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  b, a = np.polyfit(x, y, 1)
  residual = y - (a + b * x)
  total = ((y - y.mean()) ** 2).sum()
  return float(a), float(b), float(1 - (residual ** 2).sum() / total) if total else 1.0


def run(exp, command: str) -> str:
  path = exp.path(common.ANALYSIS_DIR, "efficiency_timings.json")
  if not files.is_done(path):
    files.write_json(path, measure(exp))
  with open(path) as f:
    m = json.load(f)
  items = [r["items"] for r in m["by_items"]]
  secs = [r["seconds"] for r in m["by_items"]]
  ranks = [r["rank"] for r in m["by_rank"]]
  rank_secs = [r["seconds"] for r in m["by_rank"]]
  a, b, r2 = fit(items, secs)
  ra, rb, rr2 = fit(ranks, rank_secs)
  rows = [[f"items = {n}", f"{r['steps']} steps", f"{r['seconds']:.2f}"] for n, r in
          zip(items, m["by_items"])]
  rows += [[f"LoRA rank {k}", f"{r['steps']} steps", f"{r['seconds']:.2f}"] for k, r in
           zip(ranks, m["by_rank"])]
  rows += [[f"storage: {name}", f"{s['params']:,} params", f"{s['bytes'] / 1024:.1f} KiB"]
           for name, s in m["storage"].items()]
  table = common.Table(
      f"{exp.task.name}: training time and storage per user", ["what", "size", "seconds / KiB"],
      rows,
      f"User {m['user']}'s first n history items, {m['epochs']} epochs of batch "
      f"{m['batch_size']}, one user at a time on {m['devices']}. Fit: seconds = {a:.2f} + "
      f"{b:.3f} x items (R^2 {r2:.3f}); against rank: seconds = {ra:.2f} + {rb:.4f} x rank "
      f"(R^2 {rr2:.3f}). Storage: adapter_model.safetensors of one user (f32).")
  fig, (ax1, ax2) = common.figure(ncols=2, width=4.4)
  grid = np.linspace(0, max(items), 50)
  ax1.plot(items, secs, "o", color=common.SHADES[0], label="measured")
  ax1.plot(grid, a + b * grid, "--", color=common.SHADES[1], label=f"fit: {b:.3f} s/item")
  ax1.set_xlabel("history items the user trains on")
  ax1.set_ylabel("training time per user (s)")
  ax1.legend(fontsize=8)
  ax2.plot(ranks, rank_secs, "s", color=common.SHADES[0], label="measured")
  grid = np.linspace(min(ranks), max(ranks), 50)
  ax2.plot(grid, ra + rb * grid, "--", color=common.SHADES[1], label=f"fit: {rb:.4f} s/rank")
  ax2.set_xscale("log", base=2)
  ax2.set_xticks(ranks, [str(k) for k in ranks])
  ax2.set_xlabel(f"LoRA rank ({m['rank_items']} history items)")
  ax2.set_ylabel("training time per user (s)")
  ax2.legend(fontsize=8)
  fig.suptitle(f"{exp.task.name}: per-user training time", fontsize=10)
  data = {**m, "fit_items": {"intercept": a, "slope": b, "r2": r2},
          "fit_rank": {"intercept": ra, "slope": rb, "r2": rr2}}
  return common.save(exp, "efficiency", table, fig, data, command)
