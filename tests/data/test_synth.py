"""The generator: deterministic, long-tailed, shiftable, with preferences an oracle can exploit."""

import os
import statistics

import pytest

from oppu_jax.data import synth
from oppu_jax.data import synth_makers
from oppu_jax.data import tasks


def _files(path):
  return {n: (path / n).read_bytes() for n in sorted(os.listdir(path))}


@pytest.mark.parametrize("name", ["LaMP_3", "LaMP_7"])
def test_same_seed_same_files(tmp_path, name):
  for d, seed in (("a", 3), ("b", 3), ("c", 4)):
    synth.generate(name, str(tmp_path / d), num_users=10, seed=seed)
  assert _files(tmp_path / "a") == _files(tmp_path / "b")
  assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_lamp3_oracle_gap():
  report = synth.oracle_report("LaMP_3")
  mae = report["MAE"]
  assert mae["personalized"] < 0.2 < 0.5 < mae["non_personalized"]
  assert mae["from_history"] < mae["non_personalized"] - 0.4


@pytest.mark.parametrize("name", ["LaMP_1", "LaMP_2N", "LaMP_2M"])
def test_classification_oracle_gap(name):
  acc = synth.oracle_report(name, num_users=60)["accuracy"]
  assert acc["personalized"] > acc["from_history"] - 0.05
  assert acc["from_history"] > acc["non_personalized"] + 0.15


@pytest.mark.parametrize("name", ["LaMP_4", "LaMP_5", "LaMP_6", "LaMP_7"])
def test_generation_oracle_gap(name):
  rouge = synth.oracle_report(name, num_users=40)["ROUGE-1"]
  assert rouge["personalized"] > rouge["non_personalized"] + 0.05


def test_shift_removes_vocabulary_overlap_only():
  near = synth.oracle_report("LaMP_3", num_users=30, shift=0.0)
  far = synth.oracle_report("LaMP_3", num_users=30, shift=1.0)
  assert near["query_history_overlap"]["mean"] > 0.9
  assert far["query_history_overlap"]["mean"] == 0.0
  assert near["MAE"] == far["MAE"]  # Same latents, same golds: only the words moved.
  assert synth.oracle_report("LaMP_3", num_users=30, shift=0.5)["MAE"] == near["MAE"]
  assert 0.3 < synth.oracle_report("LaMP_3", num_users=30, shift=0.5)[
      "query_history_overlap"]["mean"] < 0.7


def test_history_lengths_have_a_long_tail():
  data = synth.synthesize("LaMP_3", num_users=200, history_min=5, history_max=300)
  lengths = [len(u.history) for u in data.users]
  assert min(lengths) >= 5 and max(lengths) <= 300
  assert max(lengths) > 8 * statistics.median(lengths)
  flat = synth.synthesize("LaMP_3", num_users=50, history_min=5, history_max=10, long_tail=False)
  assert {len(u.history) for u in flat.users} <= set(range(5, 11))


def test_lamp3_texts_carry_the_sentiment_and_users_their_bias():
  data = synth.synthesize("LaMP_3", num_users=40, noise=0.0)
  positive = set(synth_makers.SENTIMENT[0])
  for user in data.users:
    for item in user.history:
      assert item["score"] in {"1", "2", "3", "4", "5"}
      assert item["date"] < user.queries[0].date
  # A strongly positive review (2 strong words) scored 3 or less: a harsh user.
  harsh = [it for u in data.users for it in u.history
           if sum(w.strip(".").lower() in positive for w in it["text"].split()) == 2
           and int(it["score"]) <= 3]
  assert harsh


def test_queries_parse_and_golds_are_labels():
  for name in tasks.TASKS:
    data = synth.synthesize(name, num_users=3, history_min=2, history_max=4)
    task = tasks.get_task(name)
    for user in data.users:
      for q in user.queries:
        assert tasks.query_text(task, q.input)
        assert task.labels is None or q.gold in task.labels
