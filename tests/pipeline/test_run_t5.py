"""The pipeline on the FlanT5 path: a tiny random T5 checkpoint with its own tokenizer runs through
every stage (task adaptation merged into T5, per-user adapters on the encoder-decoder, label
scoring and beam-search generation), in the default bf16."""

import json

import pytest

from conftest import tiny_config
from oppu_jax.data import lamp
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.peft import hf_format
from oppu_jax.pipeline import run


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["LaMP_2M", "LaMP_5"])
def test_a_t5_checkpoint_runs_every_stage(tiny_t5_dir, tmp_path, task_name):
  settings = "non_personalized,rag_k1,oppu_k0"
  config = tiny_config(task_name, tiny_t5_dir, settings=settings,
                       **{"model.compute_dtype": "bfloat16", "eval.decoding": "beam"})
  assert config.model.param_dtype == "bfloat16"
  results = run.run(config, str(tmp_path))
  assert list(results) == settings.split(",")
  data = lamp.load(str(tmp_path / "data"), task_name)
  test_users, _ = lamp.select_users(data, config.data.num_test_users)
  golds = {q.id for u in test_users.users for q in u.queries}
  labels = tasks_lib.get_task(task_name).labels
  for setting in settings.split(","):
    doc = json.loads((tmp_path / "predictions" / f"{setting}.json").read_text())
    preds = {g["id"]: g["output"] for g in doc["golds"]}
    assert set(preds) == golds
    if labels:
      assert set(preds.values()) <= set(labels)
  for user in test_users.users:
    adapter_dir = tmp_path / "adapters" / "oppu_k0" / user.id
    config_json = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config_json["task_type"] == "SEQ_2_SEQ_LM"
    assert config_json["target_modules"] == ["q", "v"]  # every stack's, as PEFT reads T5
  # The adapters are T5's: they load against the T5 weight table.
  from oppu_jax.models import load

  model, model_config = load.load_model(tiny_t5_dir)
  method, adapter = hf_format.load_adapter(
      str(tmp_path / "adapters" / "oppu_k0" / test_users.users[0].id), model.weight_table(),
      model_config)
  assert set(adapter["layers"]) == {"enc.q", "enc.v", "dec.q", "dec.v", "cross.q", "cross.v"}
