"""Adapter similarity (OPPU Appendix G, Fig. 9): cosine similarity between users' adapters,
tensor by tensor, averaged over tensors, read from the saved HF PEFT files of OPPU k=0. For
LoRA also per module of dW = B A, which does not depend on the random A each user starts from.
On generated data the habit the generator gave each user is known: the table says whether
adapters of users with the same habit are more alike than those of users with different ones."""

from __future__ import annotations

import os

import numpy as np
from safetensors.numpy import load_file

from oppu_jax.analysis import common
from oppu_jax.data import synth
from oppu_jax.peft.hf_format import WEIGHTS_NAME
from oppu_jax.pipeline import experiment, run as run_lib
from oppu_jax.pipeline.settings import SETTINGS


def tensor_cosines(adapters: list[dict[str, np.ndarray]]) -> np.ndarray:
  """[n, n]: for users i, j the mean over tensor names of cos(flat_i, flat_j)."""
  names = sorted(adapters[0])
  total = np.zeros((len(adapters), len(adapters)))
  for name in names:
    flat = np.stack([a[name].astype(np.float64).ravel() for a in adapters])
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-30)
    total += flat @ flat.T
  return total / len(names)


def lora_deltas(adapter: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{module: B @ A} of one HF PEFT LoRA file ({} for another method)."""
  out = {}
  for name, a in adapter.items():
    if ".lora_A." in name:
      b = adapter[name.replace(".lora_A.", ".lora_B.")]
      out[name.replace(".lora_A.weight", "")] = b.astype(np.float64) @ a.astype(np.float64)
  return out


def habit_means(sim: np.ndarray, habits: list[str]) -> tuple[float, float, int, int]:
  """(mean over pairs with the same habit, mean over pairs with different ones, their counts)."""
  same, other = [], []
  for i in range(len(habits)):
    for j in range(i + 1, len(habits)):
      (same if habits[i] == habits[j] else other).append(sim[i, j])
  mean = lambda v: float(np.mean(v)) if v else float("nan")
  return mean(same), mean(other), len(same), len(other)


def cluster_order(sim: np.ndarray) -> list[int]:
  """Users ordered by average-linkage clustering on 1 - similarity (similar users adjacent)."""
  from scipy.cluster.hierarchy import leaves_list, linkage
  from scipy.spatial.distance import squareform

  if len(sim) < 3:
    return list(range(len(sim)))
  distance = np.clip(1.0 - (sim + sim.T) / 2, 0.0, None)
  np.fill_diagonal(distance, 0.0)
  return [int(i) for i in leaves_list(linkage(squareform(distance, checks=False), "average"))]


def run(exp, command: str) -> str:
  setting = SETTINGS["oppu_k0"]
  run_lib.run_settings(exp, [setting])
  users = list(exp.test_users)
  adapters = [load_file(os.path.join(experiment.adapter_dir(exp, setting, u.id), WEIGHTS_NAME))
              for u in users]
  measures = {"flattened tensors": tensor_cosines(adapters)}
  deltas = [lora_deltas(a) for a in adapters]
  if deltas[0]:
    measures["LoRA dW = BA"] = tensor_cosines(deltas)
  c = exp.config
  habits = (synth.user_habits(exp.task.name, seed=c.seed, **c.data.synth.to_dict())
            if not c.data.path else {})
  labels = [habits.get(u.id, "?") for u in users]
  rows, data = [], {"users": [u.id for u in users], "habits": labels, "measures": {}}
  for name, sim in measures.items():
    off = sim[~np.eye(len(users), dtype=bool)]
    same, other, n_same, n_other = habit_means(sim, labels) if habits else (
        float("nan"),) * 2 + (0, 0)
    rows.append([name, float(off.mean()), float(off.min()), float(off.max()), same, other,
                 same - other])
    data["measures"][name] = {"matrix": sim, "mean": float(off.mean()), "same_habit": same,
                              "other_habit": other, "same_pairs": n_same,
                              "other_pairs": n_other}
  verdict = ""
  if habits:
    alike = [r[0] for r in rows if r[6] > 0]
    first = data["measures"][rows[0][0]]
    verdict = (f" {first['same_pairs']} same-habit and {first['other_pairs']} different-habit "
               f"pairs. Adapters of users with the same habit are more alike under: "
               f"{', '.join(alike) or 'neither measure'}.")
  table = common.Table(
      f"{exp.task.name}: similarity of users' OPPU (k=0) adapters",
      ["measure", "mean (off-diagonal)", "min", "max", "same habit", "different habit",
       "same - different"], rows,
      f"Cosine similarity of two users' adapters, per tensor, averaged over tensors "
      f"(the paper's measure); {len(users)} test users; habits: "
      f"{'the generator' if habits else 'unknown (not generated data)'}"
      f" ({', '.join(sorted(set(labels)))}).{verdict}")
  fig, axes = common.figure(ncols=len(measures), width=5.2, height=5.0)
  # Clustered on the last measure: dW where the adapters are LoRA (a random A each makes the
  # flattened tensors' cosines near 0 whatever the users' habits).
  order = cluster_order(list(measures.values())[-1])
  names = [f"{users[i].id} ({labels[i]})" for i in order]
  for ax, (name, sim) in zip(axes, measures.items()):
    shown = sim[np.ix_(order, order)].copy()
    np.fill_diagonal(shown, np.nan)  # self-similarity (1) would wash out the scale; left blank
    image = ax.imshow(shown, cmap="Greys", vmin=np.nanmin(shown), vmax=np.nanmax(shown))
    ax.set_xticks(range(len(order)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(order)), names, fontsize=6)
    ax.set_title(f"cosine: {name}", fontsize=9)
    ax.set_xlabel("user (generated habit), clustered order", fontsize=8)
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="cosine similarity (diagonal blank)", shrink=0.8)
  data["order"] = order
  return common.save(exp, "similarity", table, fig, data, command)
