"""Efficiency: the timed users' step counts from the plan arithmetic, the fit by the closed form,
and the storage against an adapter file of the same method in the workdir."""

import math
import os

import numpy as np
import pytest

from analysis_helpers import read


def test_steps_fit_and_storage(analysed):
  config, workdir = analysed
  data = read(workdir, "efficiency")
  batch, epochs = config.train.batch_size, config.train.epochs
  items = [r["items"] for r in data["by_items"]]
  assert items == sorted(set(min(n, data["rank_items"]) for n in (2, 4, 8)))
  for row in data["by_items"]:
    assert row["steps"] == math.ceil(row["items"] / batch) * epochs
    assert row["seconds"] > 0
  x = np.array(items, float)
  y = np.array([r["seconds"] for r in data["by_items"]])
  slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
  assert data["fit_items"]["slope"] == pytest.approx(slope)
  assert data["fit_items"]["intercept"] == pytest.approx(y.mean() - slope * x.mean())
  assert [r["rank"] for r in data["by_rank"]] == [2, 4]
  # Storage depends on shapes only: the trained adapters of the same method have the same size.
  for method, setting in (("lora", "oppu_k0"), ("ia3", "oppu_k0@ia3"),
                          ("prompt_tuning", "oppu_k0@prompt_tuning")):
    directory = os.path.join(workdir, "adapters", setting)
    user = sorted(os.listdir(directory))[0]
    on_disk = os.path.getsize(os.path.join(directory, user, "adapter_model.safetensors"))
    assert data["storage"][method]["bytes"] == on_disk, method
