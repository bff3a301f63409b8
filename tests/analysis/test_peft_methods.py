"""PEFT methods: MAE by hand per method; the parameter counts from the tiny model's shapes
(hidden 32, 4 heads of 8, 2 KV heads, MLP 64, 2 layers) and the bytes from the files on disk."""

import os

import numpy as np
import pytest

from analysis_helpers import golds_and_preds, mae, read

LAYERS, HIDDEN, KV, MLP, RANK, VIRTUAL = 2, 32, 16, 64, 8, 20
EXPECTED_PARAMS = {
    "LoRA": LAYERS * ((HIDDEN * RANK + RANK * HIDDEN) + (HIDDEN * RANK + RANK * KV)),  # q, v
    "(IA)3": LAYERS * (KV + KV + MLP),  # k, v outputs and the MLP's down input
    "prompt tuning": VIRTUAL * HIDDEN,
}


def test_methods_metrics_params_and_bytes(analysed):
  _, workdir = analysed
  data = read(workdir, "peft_methods")
  for label, row in data["methods"].items():
    assert row["value"] == pytest.approx(mae(*golds_and_preds(workdir, row["setting"])))
    assert row["params"] == EXPECTED_PARAMS[label], label
    directory = os.path.join(workdir, "adapters", row["setting"])
    sizes = [os.path.getsize(os.path.join(directory, u, "adapter_model.safetensors"))
             for u in os.listdir(directory)]
    assert row["bytes"] == pytest.approx(np.mean(sizes))
    assert row["bytes"] > 4 * row["params"]  # f32 tensors plus the safetensors header
