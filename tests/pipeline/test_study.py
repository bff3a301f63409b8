"""The PEFT-vs-RAG study's grid on a tiny model: settings, the best-retriever rule, adapters reused
(not retrained) by the PEFT + RAG rows, RSPG fitted on the other users, the Table 1 layout."""

import json

import pytest

from conftest import tiny_config
from oppu_jax import config as config_lib
from oppu_jax.errors import ConfigError
from oppu_jax.eval import metrics
from oppu_jax.data import lamp
from oppu_jax.pipeline import run
from oppu_jax.pipeline.settings import STUDY, parse_settings


def test_the_study_grid_parses():
  assert [s.name for s in parse_settings("study")] == list(STUDY)
  assert [s.name for s in parse_settings("study:rag_bm25,peft_r8")] == ["peft_r8", "rag_bm25"]
  with pytest.raises(ConfigError, match="add at least one rag_"):
    parse_settings("study:peft_rag_r8")
  with pytest.raises(ConfigError, match="unknown setting"):
    parse_settings("study:oppu_k0")
  c = config_lib.for_task("LaMP_5", "study")
  assert (c.settings, c.train.batch_size * c.train.grad_accum, c.train.epochs) == ("study", 16, 50)
  assert (c.eval.decoding, c.eval.num_beams, c.model.cutoff, c.eval.max_new_tokens) == (
      "beam", 4, 512, 128)


@pytest.mark.slow
def test_the_study_grid_runs_and_reuses_each_ranks_adapters(tiny_model_dir, tmp_path,
                                                             monkeypatch):
  settings = "study:non_personalized,peft_r8,rag_bm25,rag_recency,rag_dense,rag_rspg,peft_rag_r8"
  config = tiny_config("LaMP_2M", tiny_model_dir, settings=settings,
                       **{"data.history_mode": "convert", "task_adapt.enabled": False})
  trained = []
  real_train = run.train_user_adapters

  def train_user_adapters(exp, model, setting):
    trained.append(setting.name)
    return real_train(exp, model, setting)

  monkeypatch.setattr(run, "train_user_adapters", train_user_adapters)
  results = run.run(config, str(tmp_path))
  # peft_rag_r8 plugs in peft_r8's adapters: asked to train them again, it finds them done.
  assert trained == ["peft_r8", "peft_r8"]
  assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["peft_r8"]
  rags = ["rag_bm25", "rag_recency", "rag_dense", "rag_rspg"]
  best = min(rags, key=lambda s: (-results[s]["accuracy"], rags.index(s)))
  sig = json.loads((tmp_path / "significance.json").read_text())
  assert sig["best_rag"] == best
  # The PEFT + RAG row reads the best RAG row's retrieved items: its prompts are that row's.
  rspg = json.loads((tmp_path / "rspg.json").read_text())
  assert rspg["candidates"] == ["bm25", "recency", "dense"]
  table = (tmp_path / "results.md").read_text()
  assert "| metric | Non-personalized | PEFT r=8 | RAG BM25 | RAG Recency | RAG Dense | RAG RSPG " \
         "| PEFT+RAG r=8 |" in table
  assert f"retriever ({best})" in table
  data = lamp.load(str(tmp_path / "data"), "LaMP_2M")
  golds = {q.id: q.gold for u in lamp.select_users(data, 3)[0].users for q in u.queries}
  preds = lamp.read_outputs(str(tmp_path / "predictions" / "peft_rag_r8.json"))
  assert metrics.evaluate("LaMP_2M", golds, preds) == results["peft_rag_r8"]
