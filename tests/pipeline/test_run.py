"""The whole pipeline on a tiny random model and tiny generated data, for every task config."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from rouge_score import rouge_scorer
from scipy import stats

from conftest import tiny_config
from oppu_jax.data import lamp
from oppu_jax.data import lamp_write
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.errors import ConfigError, DataError, WorkdirError
from oppu_jax.pipeline import run
from oppu_jax.pipeline.settings import SETTINGS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK_CONFIGS = {"lamp1": "LaMP_1", "lamp2n": "LaMP_2N", "lamp2m": "LaMP_2M", "lamp3": "LaMP_3",
                "lamp4": "LaMP_4", "lamp5": "LaMP_5", "lamp6": "LaMP_6", "lamp7": "LaMP_7"}


def _independent_metrics(task_name, golds, preds):
  """The LaMP evaluator's numbers, computed here without the project's metrics module."""
  task = tasks_lib.get_task(task_name)
  ids = sorted(golds)
  if task.metric == "regression":
    errs = []
    for i in ids:
      g = float(golds[i])
      try:
        p = float(preds[i].strip())
      except ValueError:
        p = 1.0 if abs(1 - g) > abs(5 - g) else 5.0
      errs.append(abs(p - g))
    return {"mae": sum(errs) / len(errs), "rmse": math.sqrt(sum(e * e for e in errs) / len(errs))}
  if task.metric == "classification":
    idx = lambda s: task.labels.index(s.strip()) if s.strip() in task.labels else -1
    y, p = [idx(golds[i]) for i in ids], [idx(preds[i]) for i in ids]
    acc = sum(a == b for a, b in zip(y, p)) / len(ids)
    f1s = []
    for label in range(len(task.labels)):
      tp = sum(a == label and b == label for a, b in zip(y, p))
      fp = sum(a != label and b == label for a, b in zip(y, p))
      fn = sum(a == label and b != label for a, b in zip(y, p))
      f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": acc, "f1": sum(f1s) / len(f1s)}
  scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
  scores = [scorer.score(golds[i].strip(), preds[i].strip()) for i in ids]
  return {"rouge-1": sum(s["rouge1"].fmeasure for s in scores) / len(ids),
          "rouge-L": sum(s["rougeL"].fmeasure for s in scores) / len(ids)}


@pytest.mark.slow
@pytest.mark.parametrize("config_name", sorted(TASK_CONFIGS))
def test_every_task_config_runs_and_writes_valid_outputs(tiny_model_dir, tmp_path, config_name):
  task_name = TASK_CONFIGS[config_name]
  # Every task runs its personalized setting; the bare-base paths (scoring and decoding) and
  # retrieval run on one classification and one generation task, to keep the suite short.
  settings = {"lamp3": "non_personalized,rag_k1,oppu_k0",
              "lamp4": "non_personalized,oppu_k0"}.get(config_name, "oppu_k0")
  config = tiny_config(task_name, tiny_model_dir, settings=settings)
  results = run.run(config, str(tmp_path))

  data = lamp.load(str(tmp_path / "data"), task_name)
  test_users, _ = lamp.select_users(data, config.data.num_test_users)
  golds = {q.id: q.gold for u in test_users.users for q in u.queries}
  assert golds
  on_disk = json.loads((tmp_path / "results.json").read_text())
  for setting in settings.split(","):
    doc = json.loads((tmp_path / "predictions" / f"{setting}.json").read_text())
    assert doc["task"] == task_name[:6]  # LaMP's evaluator names LaMP_2N and LaMP_2M "LaMP_2"
    preds = {g["id"]: g["output"] for g in doc["golds"]}
    assert set(preds) == set(golds)  # every query id has a prediction
    if tasks_lib.get_task(task_name).labels:
      assert set(preds.values()) <= set(tasks_lib.get_task(task_name).labels)
    want = _independent_metrics(task_name, golds, preds)
    assert on_disk[setting].keys() == want.keys()
    for metric, value in want.items():
      assert on_disk[setting][metric] == pytest.approx(value, abs=1e-9), (setting, metric)
      assert results[setting][metric] == on_disk[setting][metric]
  for user in test_users.users:
    adapter_dir = tmp_path / "adapters" / "oppu_k0" / user.id
    assert (adapter_dir / "adapter_config.json").exists()
    assert (adapter_dir / "adapter_model.safetensors").exists()
  table = (tmp_path / "results.md").read_text()
  assert all(f"| {s} |" in table for s in settings.split(","))


@pytest.mark.slow
def test_a_split_released_without_golds_is_predicted_not_scored(tiny_model_dir, tmp_path):
  """LaMP ships its test split with no outputs file: every query gets a prediction (LaMP's
  outputs format, for the leaderboard), the metrics cover the queries that have golds, and the
  run ends normally; with only that split, predictions and no metrics."""
  from oppu_jax import main
  from oppu_jax.data import synth

  release = tmp_path / "LaMP_3"
  data = synth.synthesize("LaMP_3", seed=0, num_users=6, history_min=4, history_max=7,
                          queries_per_user=2, text_words=8)
  lamp_write.write_official_layout(data, str(release))  # train_* and dev_* (each user: 1 and 1)
  os.rename(release / "dev_questions.json", release / "test_questions.json")
  os.remove(release / "dev_outputs.json")
  config = tiny_config("LaMP_3", tiny_model_dir, settings="non_personalized,oppu_k0",
                       **{"data.path": str(release)})
  table = main.run_and_report(config, str(tmp_path / "w"))

  loaded = lamp.load(str(release), "LaMP_3")
  test_users, _ = lamp.select_users(loaded, config.data.num_test_users)
  queries = [q for u in test_users.users for q in u.queries]
  golds = {q.id: q.gold for q in queries if q.gold is not None}
  assert 0 < len(golds) < len(queries)
  assert {q.split for q in queries if q.gold is None} == {"test"}
  on_disk = json.loads((tmp_path / "w" / "results.json").read_text())
  for setting in ("non_personalized", "oppu_k0"):
    doc = json.loads((tmp_path / "w" / "predictions" / f"{setting}.json").read_text())
    preds = {g["id"]: g["output"] for g in doc["golds"]}
    assert set(preds) == {q.id for q in queries}  # the gold-less ones too
    want = _independent_metrics("LaMP_3", golds, {i: preds[i] for i in golds})
    assert on_disk[setting] == pytest.approx(want, abs=1e-9)
    assert f"| {setting} |" in table
  results_md = (tmp_path / "w" / "results.md").read_text()
  assert f"{len(queries) - len(golds)} of {len(queries)} test queries have no gold (" in results_md
  assert "of split 'test'" in results_md

  only_test = tiny_config("LaMP_3", tiny_model_dir, settings="non_personalized",
                          **{"data.path": str(release), "data.split": "test",
                             "task_adapt.enabled": False})
  table = main.run_and_report(only_test, str(tmp_path / "w_test"))
  assert table.endswith("no test query has a gold: predictions in "
                        f"{tmp_path / 'w_test'}/predictions/")
  doc = json.loads((tmp_path / "w_test" / "predictions" / "non_personalized.json").read_text())
  assert doc["task"] == "LaMP_3" and len(doc["golds"]) > 0
  assert not (tmp_path / "w_test" / "results.json").exists()
  assert "have no gold" in (tmp_path / "w_test" / "results.md").read_text()


@pytest.mark.slow
def test_the_whole_grid_runs_in_the_default_dtype_with_significance(tiny_model_dir, tmp_path):
  # bf16 weights and bf16 compute, the defaults: every setting, profiles (PAG) included.
  config = tiny_config("LaMP_3", tiny_model_dir, settings="all",
                       **{"model.compute_dtype": "bfloat16"})
  assert config.model.param_dtype == "bfloat16"
  results = run.run(config, str(tmp_path))
  assert list(results) == list(SETTINGS)
  golds = {}
  for user in lamp.select_users(lamp.load(str(tmp_path / "data"), "LaMP_3"), 3)[0].users:
    golds.update({q.id: float(q.gold) for q in user.queries})
  preds = {s: {g["id"]: g["output"] for g in json.loads(
      (tmp_path / "predictions" / f"{s}.json").read_text())["golds"]} for s in SETTINGS}
  errors = lambda s: np.array([abs(float(preds[s][i]) - golds[i]) for i in sorted(golds)])
  sig = json.loads((tmp_path / "significance.json").read_text())
  assert sig["baseline"] == "non_personalized"
  best_rag = min(("rag_k1", "rag_k2", "rag_k4"), key=lambda s: results[s]["mae"])
  assert sig["best_rag"] == best_rag
  table = (tmp_path / "results.md").read_text()
  assert f"{len(golds)} queries of 3 users." in table
  for setting in SETTINGS:
    if setting == "non_personalized":
      continue
    test = sig["vs_baseline"][setting]["mae"]
    diff = errors(setting) - errors("non_personalized")
    if np.any(diff) and not np.all(diff == diff[0]):
      assert test["p"] == pytest.approx(stats.ttest_rel(errors(setting),
                                                        errors("non_personalized")).pvalue)
    mark = "*" if test["better"] else ""
    assert f"{results[setting]['mae']:.4f}{mark}" in table.split(f"| {setting} |")[1].split("|")[0]


@pytest.mark.slow
def test_rerun_after_completion_only_reports(tiny_model_dir, tmp_path):
  config = tiny_config("LaMP_3", tiny_model_dir)
  first = run.run(config, str(tmp_path))
  stamps = {p: os.stat(p).st_mtime_ns for p in _outputs(tmp_path)}
  timings = json.loads((tmp_path / "timings.json").read_text())
  assert [s["stage"] for s in timings["stages"]] == [
      "stage 1: task adaptation (B)", "stage 3: non_personalized", "stage 2: oppu_k0 adapters",
      "stage 3: oppu_k0"]
  trained = timings["stages"][2]
  assert trained["real_tokens"] > 0 and 0 <= trained["padding_share"] < 1
  assert trained["compilations"] >= 1 and timings["seconds"] >= sum(
      s["seconds"] for s in timings["stages"])
  assert run.run(config, str(tmp_path)) == first
  assert {p: os.stat(p).st_mtime_ns for p in _outputs(tmp_path)} == stamps
  # timings.json is this invocation's: the rerun did no stage
  assert json.loads((tmp_path / "timings.json").read_text())["stages"] == []


def _outputs(root):
  return [os.path.join(d, f) for d, _, files in os.walk(root / "adapters") for f in files] + [
      str(p) for p in (root / "predictions").iterdir()] + [str(root / "checkpoints")]


@pytest.mark.slow
def test_bad_inputs_fail_with_one_clear_line(tiny_model_dir, tmp_path):
  with pytest.raises(ConfigError, match="config.data.path: .* does not exist"):
    run.run(tiny_config("LaMP_3", tiny_model_dir, **{"data.path": str(tmp_path / "nope")}),
            str(tmp_path / "w1"))
  # Checked before the workdir is claimed: the corrected command finds it free.
  assert not os.path.exists(tmp_path / "w1" / "config.json")
  with pytest.raises(ConfigError, match="config.model.path: '/typo' does not exist"):
    run.run(tiny_config("LaMP_3", "/typo"), str(tmp_path / "w1"))
  assert not os.path.exists(tmp_path / "w1" / "config.json")
  neither = tmp_path / "neither"
  neither.mkdir()
  (neither / "notes.txt").write_text("hello")
  with pytest.raises(DataError, match="neither LaMP layout"):
    run.run(tiny_config("LaMP_3", tiny_model_dir, **{"data.path": str(neither)}),
            str(tmp_path / "w2"))
  wd = tmp_path / "w3"
  wd.mkdir()
  (wd / "config.json").write_text(json.dumps({"task": "LaMP_5"}))
  (wd / "results.json").write_text("{}")  # a finished stage of that run
  with pytest.raises(WorkdirError, match="different config") as e:
    run.run(tiny_config("LaMP_3", tiny_model_dir), str(wd))
  assert "\n" not in str(e.value)


def test_cli_reports_a_mistyped_key_in_one_line():
  out = subprocess.run([sys.executable, "-m", "oppu_jax.main", "--config=configs/lamp3.py",
                        "--workdir=/tmp/unused", "--config.trian.epochs=1"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith("error: unknown config key in --config.trian.epochs")
  assert "Traceback" not in out.stderr


def test_work_is_ordered_by_base_variant_and_one_merged_model_lives_at_a_time(monkeypatch,
                                                                            tmp_path):
  import gc
  import types
  import weakref

  from oppu_jax.pipeline.settings import parse_settings

  class Model:
    pass

  settings = parse_settings("non_personalized,rag_k1,pag_k0,oppu_k0,oppu_k1")
  exp = types.SimpleNamespace(settings=settings, path=lambda *p: str(tmp_path.joinpath(*p)),
                              profiles={"u1": "a profile"},  # PAG's profiles are there
                              config=tiny_config("LaMP_3", ""))
  config = types.SimpleNamespace(analysis=types.SimpleNamespace(name=""),
                                 storage=types.SimpleNamespace(cache=str(tmp_path / "cache")),
                                 trace=types.SimpleNamespace(dir="", skip=1, steps=3))
  calls, alive = [], []

  def adapt_to_task(_, base):
    gc.collect()
    calls.append(("adapt", base, sum(r() is not None for r in alive)))
    model = Model()
    alive.append(weakref.ref(model))
    return model

  monkeypatch.setattr(run, "setup", lambda *_: exp)
  monkeypatch.setattr(run, "adapt_to_task", adapt_to_task)
  monkeypatch.setattr(run, "train_user_adapters", lambda _, m, s: calls.append(("train", s.name)))
  monkeypatch.setattr(run, "evaluate", lambda _, m, s: calls.append(("eval", s.name)))
  monkeypatch.setattr(run, "write_report", lambda _: "report")
  (tmp_path / "predictions").mkdir()
  (tmp_path / "predictions" / "pag_k0.json").write_text("{}")  # done: variant P is not built
  assert run.run(config, str(tmp_path)) == "report"
  assert calls == [("adapt", "B", 0), ("eval", "non_personalized"), ("train", "oppu_k0"),
                   ("eval", "oppu_k0"), ("adapt", "R", 0), ("eval", "rag_k1"),
                   ("train", "oppu_k1"), ("eval", "oppu_k1")]


@pytest.mark.slow
def test_per_k_bases_are_trained_with_each_settings_k_in_order(tiny_model_dir, tmp_path,
                                                                 monkeypatch):
  """task_adapt.per_k: the paper's Θ^(R) with the top-k, one base per k (checkpoints/task_R<k>);
  without it one R base serves every k (task_adapt.k)."""
  from oppu_jax.pipeline import examples

  made, real_pairs = [], examples.task_adaptation_pairs

  def pairs(task, users, base, k, profiles, **kw):
    made.append((base, k if base != "B" else None))  # B reads no retrieved item
    return real_pairs(task, users, base, k, profiles, **kw)

  monkeypatch.setattr(examples, "task_adaptation_pairs", pairs)
  config = tiny_config("LaMP_3", tiny_model_dir, settings="non_personalized,rag_k2,rag_k1",
                       **{"task_adapt.per_k": True})
  run.run(config, str(tmp_path / "per_k"))
  assert made == [("B", None), ("R", 1), ("R", 2)]
  assert sorted(os.listdir(tmp_path / "per_k" / "checkpoints")) == [
      "task_B", "task_R1", "task_R2"]
  made.clear()
  run.run(tiny_config("LaMP_3", tiny_model_dir, settings="rag_k2,rag_k1"), str(tmp_path / "one"))
  assert made == [("R", 1)] and os.listdir(tmp_path / "one" / "checkpoints") == ["task_R"]


@pytest.mark.slow
def test_a_llama2_style_tokenizer_starts_every_model_input_with_bos_once(
    tiny_model_dir, llama2_tokenizer_dir, tmp_path, monkeypatch):
  # Task adaptation, per-user training and evaluation prompts all see <s> (id 1) first, once.
  config = tiny_config("LaMP_3", tiny_model_dir, settings="non_personalized,oppu_k1",
                       **{"model.tokenizer": llama2_tokenizer_dir()})
  examples, rows = [], []
  from oppu_jax.pipeline import predict as predict_lib, training

  real_plan, real_predict = training.plan_user, predict_lib._predict

  def plan_user(plan_id, encoded, **kw):
    examples.extend(e.tokens.tolist() for e in encoded)
    return real_plan(plan_id, encoded, **kw)

  def predict(exp, model, adapters, batch, progress=None):
    rows.extend(ids for _, ids in batch)
    return real_predict(exp, model, adapters, batch, progress)

  monkeypatch.setattr(training, "plan_user", plan_user)
  monkeypatch.setattr(predict_lib, "_predict", predict)
  run.run(config, str(tmp_path))
  assert len(rows) == 2 * 6  # two settings, three users of two queries
  assert examples
  for tokens in examples + rows:
    assert tokens[0] == 1 and 1 not in tokens[1:]


@pytest.mark.slow
def test_a_run_on_a_store_workdir_resumes_from_the_store_alone(tiny_model_dir, tmp_path,
                                                                 monkeypatch):
  """file:// stands for gs://: the same mirror, push and pull code. A second run with an empty
  local cache (another VM) finds everything in the store and trains nothing."""
  from oppu_jax import storage
  from oppu_jax.pipeline import run
  from oppu_jax.train import multi_user

  url = f"file://{tmp_path / 'store'}"
  c = tiny_config("LaMP_3", tiny_model_dir)
  c.storage.cache = str(tmp_path / "cache")
  first = run.run(c, url)
  assert json.loads((tmp_path / "store" / "results.json").read_text()) == first
  assert not storage._mirrors  # the run detached its mirror: nothing pushes there any more
  c.storage.cache = str(tmp_path / "cache_of_another_vm")
  monkeypatch.setattr(multi_user, "train_users", lambda *a, **k: pytest.fail("trained again"))
  assert run.run(c, url) == first
