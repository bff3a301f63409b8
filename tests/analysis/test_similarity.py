"""Adapter similarity: the matrix recomputed with numpy from the saved adapter files, and the
habit means from the generator's truth."""

import os

import numpy as np
import pytest
from safetensors import safe_open

from analysis_helpers import read


def cosine_by_hand(paths):
  tensors = []
  for path in paths:
    with safe_open(path, "np") as f:
      tensors.append({k: f.get_tensor(k).astype(np.float64) for k in f.keys()})
  n = len(tensors)
  out = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      values = []
      for k in tensors[i]:
        a, b = tensors[i][k].ravel(), tensors[j][k].ravel()
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        values.append(a @ b / norm if norm else 0.0)
      out[i, j] = np.mean(values)
  return out


def test_matrix_and_habit_means(analysed):
  config, workdir = analysed
  data = read(workdir, "similarity")
  paths = [os.path.join(workdir, "adapters", "oppu_k0", u, "adapter_model.safetensors")
           for u in data["users"]]
  sim = cosine_by_hand(paths)
  flat = data["measures"]["flattened tensors"]
  np.testing.assert_allclose(np.array(flat["matrix"]), sim, atol=1e-9)
  from oppu_jax.data import synth

  habits = synth.user_habits("LaMP_3", seed=config.seed, **config.data.synth.to_dict())
  assert data["habits"] == [habits[u] for u in data["users"]]
  pairs = [(i, j) for i in range(len(paths)) for j in range(i + 1, len(paths))]
  same = [sim[i, j] for i, j in pairs if data["habits"][i] == data["habits"][j]]
  other = [sim[i, j] for i, j in pairs if data["habits"][i] != data["habits"][j]]
  if same:
    assert flat["same_habit"] == pytest.approx(np.mean(same))
  if other:
    assert flat["other_habit"] == pytest.approx(np.mean(other))
  assert sorted(data["order"]) == list(range(len(paths)))


def test_habits_are_the_generators_biases():
  """LaMP_3's habit is the rating bias: users' mean rating rises with it."""
  from oppu_jax.data import synth

  kwargs = dict(num_users=60, seed=3, history_min=30, history_max=30, noise=0.0)
  habits = synth.user_habits("LaMP_3", **kwargs)
  data = synth.synthesize("LaMP_3", **kwargs)
  by_habit = {}
  for user in data.users:
    by_habit.setdefault(habits[user.id], []).extend(int(h["score"]) for h in user.history)
  order = sorted(by_habit, key=lambda h: int(h.split()[1]))
  assert order == ["bias -2", "bias -1", "bias +0", "bias +1"]
  means = [np.mean(by_habit[h]) for h in order]
  assert means == sorted(means) and means[-1] - means[0] > 1.5
