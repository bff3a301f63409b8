"""Loaders: both layouts, the generator round trip, and one clear error per malformed input."""

import json
import logging
import os

import pytest

import lamp_fixtures as lf
from oppu_jax.data import lamp
from oppu_jax.data import lamp_write
from oppu_jax.data import prompts
from oppu_jax.data import synth
from oppu_jax.data import tasks
from oppu_jax.data.types import DataError

ALL = tuple(tasks.TASKS)


def _small(task, out_dir, **kw):
  kw = {"num_users": 6, "seed": 1, "history_min": 3, "history_max": 12, "text_words": (6, 10),
        **kw}
  return synth.generate(task, str(out_dir), **kw)


def _dump(path, doc):
  with open(path, "w") as f:
    json.dump(doc, f)


def _official(tmp_path, questions, golds=None, split="dev", task="LaMP_3"):
  _dump(tmp_path / f"{split}_questions.json", questions)
  if golds is not None:
    _dump(tmp_path / f"{split}_outputs.json",
          {"task": task, "golds": [{"id": i, "output": o} for i, o in golds]})
  return str(tmp_path)


def _review(i, text="Fine.", score="4", **extra):
  return {"id": i, "text": text, "score": score, **extra}


def _question(qid, profile, **extra):
  return {"id": qid, "input": tasks.make_input("LaMP_3", text="Okay."), "profile": profile,
          **extra}


@pytest.mark.parametrize("name", ALL)
def test_generator_official_loader_prompts_round_trip(tmp_path, name):
  data = _small(name, tmp_path)
  assert sorted(os.listdir(tmp_path)) == [
      "dev_outputs.json", "dev_questions.json", "train_outputs.json", "train_questions.json"]
  assert lamp.detect_format(str(tmp_path)) == "official"
  loaded = lamp.load(str(tmp_path), name)
  assert loaded == data
  task = tasks.get_task(name)
  for user in loaded.users:
    assert user.history and user.queries
    for item in user.history:
      assert set(task.item_fields) | {"id", "date"} == set(item)
      prompt, answer = prompts.history_to_pairs(task, item)
      assert answer
      if task.aligned:
        assert item[task.input_field] in prompt and answer == item[task.output_field]
    for q in user.queries:
      prompt = prompts.build_prompt(task, q.input, user.history[:2], profile="P")
      assert prompt.startswith("P\n") and tasks.query_text(task, q.input) in prompt
      if task.labels is not None:
        assert q.gold in task.labels
  assert lamp.load(str(tmp_path), name, split="dev").users[0].queries == data.users[0].queries[1:]


@pytest.mark.parametrize("name", ["LaMP_2N", "LaMP_7"])
def test_oppu_layout_loads_the_same_users_as_official(tmp_path, name):
  data = _small(name, tmp_path / "official", num_users=8)
  data = type(data)(data.task, data.users, {u.id: f"profile of {u.id}" for u in data.users})
  synth.write_oppu_layout(data, str(tmp_path / "oppu"), num_test_users=3)
  assert lamp.detect_format(str(tmp_path / "oppu")) == "oppu"
  official = lamp.load(str(tmp_path / "official"), name)
  oppu = lamp.load(str(tmp_path / "oppu"), name)
  assert {u.id: u for u in official.users} == {u.id: u for u in oppu.users}
  test, others = lamp.select_users(official, 3)
  assert [u.id for u in lamp.load(str(tmp_path / "oppu"), name, split="test").users] == [
      u.id for u in test.users]
  assert oppu.profiles == data.profiles
  assert sorted(os.listdir(tmp_path / "oppu")) == sorted(lamp.OPPU_FILES.values())
  assert len(others.users) == 5


def test_select_users_longest_histories_ties_by_id(tmp_path):
  questions = [_question(f"q{i}", [_review(f"{i}_{j}") for j in range(n)], user_id=uid)
               for i, (uid, n) in enumerate([("b", 2), ("a", 2), ("c", 5), ("d", 1)])]
  data = lamp.load(_official(tmp_path, questions), "LaMP_3")
  test, others = lamp.select_users(data, 2)
  assert [u.id for u in test.users] == ["c", "a"]
  assert [u.id for u in others.users] == ["b", "d"]


def test_user_samples_merge_into_one_dated_history(tmp_path):
  early, mid, late = (_review("i1", date="2020-01-02"), _review("i2", date="2020-03-01"),
                      _review("i3", date="2020-02-10"))
  questions = [
      _question("q1", [early, late], user_id="u"),
      _question("q2", [mid, early], user_id="u"),
      _question("q3", [early]),  # no user_id: its own user
  ]
  data = lamp.load(_official(tmp_path, questions, [("q1", "3"), ("q2", "4"), ("q3", "5")]),
                   "LaMP_3")
  assert [u.id for u in data.users] == ["u", "q3"]
  user = data.user("u")
  # q1's time is its latest item (i3, 2020-02-10): i2 comes after it, so the shared history
  # (retrieval, the adapter) must not hold it.
  assert [it["id"] for it in user.history] == ["i1", "i3"]
  assert [(q.id, q.gold) for q in user.queries] == [("q1", "3"), ("q2", "4")]


def test_time_based_release_keeps_what_every_query_of_the_user_sees(tmp_path, caplog):
  items = [lf.review(str(k), f"2009-08-{10 + k}") for k in range(6)]
  compact = [lf.review(f"c{k}", f"201112{10 + k}") for k in range(4)]
  questions = (lf.time_based_user(7, items, [3, 5, 6], 100)
               + lf.time_based_user(8, compact, [2, 4], 200)
               + lf.time_based_user(9, items, [2], 300))
  path = lf.write_split(tmp_path, "dev", questions, {q["id"]: "3" for q in questions}, "LaMP_3")
  with caplog.at_level(logging.INFO, logger="oppu_jax.data.lamp"):
    data = lamp.load(path, "LaMP_3")
  assert [u.id for u in data.users] == ["7", "8", "9"]
  # User 7's earliest sample saw items 0-2 only; its later samples' extra items would leak.
  assert [it["id"] for it in data.user("7").history] == ["0", "1", "2"]
  assert [q.id for q in data.user("7").queries] == ["100", "101", "102"]
  assert {q.date for q in data.user("7").queries} == {None}
  assert [it["id"] for it in data.user("8").history] == ["c0", "c1"]
  assert [it["id"] for it in data.user("9").history] == ["0", "1"]
  assert (f"{path}: 3 users from 6 records; history rule per user: dates 2, intersection 0, "
          "single record 1; 5 profile items dropped") in caplog.text


def test_a_question_date_is_its_query_time_in_either_date_spelling(tmp_path):
  items = [lf.review("a", "20111201"), lf.review("b", "20111203"), lf.review("c", "20111205")]
  questions = [{**q, "date": d} for q, d in zip(lf.time_based_user(3, items, [3, 3], 10),
                                                ("2011-12-02", "2011-12-06"))]
  data = lamp.load(lf.write_split(tmp_path, "dev", questions, None, "LaMP_3"), "LaMP_3")
  assert [it["id"] for it in data.users[0].history] == ["a"]
  assert [q.date for q in data.users[0].queries] == ["2011-12-02", "2011-12-06"]


def test_undated_samples_of_a_user_share_the_items_all_of_them_list(tmp_path, caplog):
  a, b, c, d = (lf.review(i) for i in "abcd")
  questions = [{**q, "profile": p} for q, p in zip(lf.time_based_user(5, [a], [1, 1, 1], 10),
                                                   ([a, b], [a, b, c], [b, a, c, d]))]
  path = lf.write_split(tmp_path, "dev", questions, None, "LaMP_3")
  with caplog.at_level(logging.INFO, logger="oppu_jax.data.lamp"):
    data = lamp.load(path, "LaMP_3")
  assert [it["id"] for it in data.users[0].history] == ["a", "b"]
  assert "dates 0, intersection 1, single record 0; 2 profile items dropped" in caplog.text


def test_a_user_with_no_item_visible_to_all_its_queries(tmp_path):
  undated = [{**q, "profile": [lf.review(i)]}
             for q, i in zip(lf.time_based_user(4, [], [0, 0], 10), "ab")]
  path = lf.write_split(tmp_path, "dev", undated, None, "LaMP_3")
  message = _error(path)
  assert "dev_questions.json: user_id '4': no profile item is visible to all 2 of its queries " \
         "(intersection rule)" in message
  late = [lf.review("a", "2009-01-01"), lf.review("b", "2009-02-01")]
  early = lf.time_based_user(4, late, [1, 2], 10)
  early[0]["date"] = "2008-12-31"
  path = lf.write_split(tmp_path, "dev", early, None, "LaMP_3")
  assert "user_id '4': no profile item is visible to all 2 of its queries (dates rule)" in (
      _error(path))


def test_oppu_lamp1_items_carry_citation(tmp_path):
  data = lamp.load(lf.write_oppu_citation(tmp_path, ["Ref zero", None]), "LaMP_1")
  history = data.users[0].history
  assert [it.get("citation") for it in history] == ["Ref zero", None]
  assert prompts.format_item("LaMP_1", history[0]) == (
      "paper title: Paper 0 on graphs reference: Ref zero")
  assert prompts.format_item("LaMP_1", history[1]) == "paper title: Paper 1 on graphs"
  lf.write_oppu_citation(tmp_path, [["not", "a", "string"]])
  assert "profile item 0 (id 'p0'): field 'citation' must be a string, got list" in (
      _error(str(tmp_path), "LaMP_1"))


def test_lamp6_test_questions_in_the_avocado_scripts_object_shape(tmp_path):
  data = lamp.load(lf.write_avocado_processed(tmp_path), "LaMP_6")
  assert [(q.id, q.gold) for u in data.users for q in u.queries] == [
      ("600", "Subject 600"), ("601", "Subject 601"), ("602", None)]
  assert len(data.user("602").history) == 3
  assert lamp.load(str(tmp_path), "LaMP_6", split="test").users[0].id == "602"
  assert "test_questions.json: questions of task 'LaMP_6', not LaMP_4" in (
      _error(str(tmp_path), "LaMP_4", split="test"))


def test_lamp6_raw_release_names_the_script_that_builds_it(tmp_path):
  message = _error(lf.write_avocado_raw(tmp_path), "LaMP_6")
  assert "dev_questions.json: record 0 (id '600'): '102-000123-EM' is an Avocado file id" in (
      message)
  assert "data/avocado/create_avocado_dataset.py" in message


def test_missing_outputs_file_gives_no_golds(tmp_path):
  data = lamp.load(_official(tmp_path, [_question("q1", [_review("i1")])], split="test"), "LaMP_3")
  assert data.users[0].queries[0].gold is None


def test_over_long_history_text_is_cut_and_logged(tmp_path, caplog):
  long_text = " ".join(f"w{i}" for i in range(900))
  path = _official(tmp_path, [_question("q1", [_review("i1", long_text), _review("i2")])],
                   [("q1", "3")])
  with caplog.at_level(logging.WARNING, logger="oppu_jax.data.lamp"):
    data = lamp.load(path, "LaMP_3")
  assert data.users[0].history[0]["text"].split() == long_text.split()[:768]
  assert data.users[0].history[1]["text"] == "Fine."
  assert "cut 1 history field(s) in 1 item(s) (first: id i1) to their first 768 words" in (
      caplog.text)
  caplog.clear()
  assert lamp.load(path, "LaMP_3", max_words=None).users[0].history[0]["text"] == long_text
  assert not caplog.text


def test_predictions_round_trip(tmp_path):
  path = str(tmp_path / "pred.json")
  lamp_write.write_predictions(path, "LaMP_4", {"a": "Headline one", "b": ""})
  with open(path) as f:
    assert json.load(f) == {"task": "LaMP_4", "golds": [{"id": "a", "output": "Headline one"},
                                                        {"id": "b", "output": ""}]}
  assert lamp.read_outputs(path) == {"a": "Headline one", "b": ""}


def test_lamp2_predictions_and_golds_carry_the_evaluators_task_name(tmp_path):
  # LaMP's evaluator knows LaMP_1 .. LaMP_7: both LaMP_2 variants are "LaMP_2".
  for name in ("LaMP_2N", "LaMP_2M"):
    path = str(tmp_path / f"{name}.json")
    lamp_write.write_predictions(path, name, {"a": "comedy"})
    with open(path) as f:
      assert json.load(f)["task"] == "LaMP_2"
    assert lamp.read_outputs(path) == {"a": "comedy"}
    _small(name, tmp_path / name)
    with open(tmp_path / name / "dev_outputs.json") as f:
      assert json.load(f)["task"] == "LaMP_2"
    assert lamp.load(str(tmp_path / name), name).task == name


# --- malformed input: one line naming the file and the record ----------------------------------


def _error(path, task="LaMP_3", **kw):
  with pytest.raises(DataError) as e:
    lamp.load(path, task, **kw)
  message = str(e.value)
  assert "\n" not in message
  return message


def test_invalid_json(tmp_path):
  (tmp_path / "dev_questions.json").write_text('[{"id": "q1", ')
  message = _error(str(tmp_path))
  assert "dev_questions.json: invalid JSON at line 1" in message


def test_a_byte_that_is_not_utf8_is_named_with_its_file(tmp_path):
  (tmp_path / "dev_questions.json").write_bytes(b'[{"id": "q1", "input": "caf\xe9"}]')
  message = _error(str(tmp_path))
  assert message.endswith("dev_questions.json: not UTF-8 text: byte 0xe9 at offset 27"), message


def test_missing_score_field(tmp_path):
  path = _official(tmp_path, [_question("q1", [_review("i1"), {"id": "i2", "text": "x"}])],
                   [("q1", "3")])
  message = _error(path)
  assert "dev_questions.json: record 0 (id 'q1'): profile item 1 (id 'i2')" in message
  assert "missing field 'score'" in message


def test_question_without_gold(tmp_path):
  path = _official(tmp_path, [_question("q1", [_review("i1")]), _question("q2", [_review("i1")])],
                   [("q1", "3")])
  message = _error(path)
  assert "dev_questions.json: record 1 (id 'q2'): question has no gold in" in message
  assert "dev_outputs.json" in message


def test_gold_without_question(tmp_path):
  path = _official(tmp_path, [_question("q1", [_review("i1")])], [("q1", "3"), ("q9", "2")])
  message = _error(path)
  assert "dev_outputs.json: gold id 'q9' has no question in" in message


def test_duplicate_question_and_gold_ids(tmp_path):
  questions = [_question("q1", [_review("i1")]), _question("q1", [_review("i2")])]
  path = _official(tmp_path, questions, [("q1", "3")])
  assert "dev_questions.json: record 1 (id 'q1'): duplicate question id (also in" in _error(path)
  path = _official(tmp_path, questions[:1], [("q1", "3"), ("q1", "2")])
  assert "dev_outputs.json: gold 1 (id 'q1'): duplicate gold id (also in" in _error(path)
  users = [{"user_id": "u1", "profile": [_review("i1")],
            "query": [{"id": "q1", "input": tasks.make_input("LaMP_3", text="x")}] * 2}]
  oppu = tmp_path / "oppu"
  oppu.mkdir()
  _dump(oppu / lamp.OPPU_FILES["test"], users)
  message = _error(str(oppu))
  assert "user 0 (user_id 'u1') query 1 (id 'q1'): duplicate query id (also in" in message


def test_empty_history(tmp_path):
  path = _official(tmp_path, [_question("q1", [_review("i1")]), _question("q2", [])],
                   [("q1", "3"), ("q2", "3")])
  assert "dev_questions.json: record 1 (id 'q2'): empty history" in _error(path)


def test_profile_item_of_another_task(tmp_path):
  news = {"id": "n1", "text": "Senate votes.", "title": "Vote", "category": "politics"}
  path = _official(tmp_path, [_question("q1", [news])], [("q1", "3")])
  message = _error(path)
  assert "record 0 (id 'q1'): profile item 0 (id 'n1'): missing field 'score'" in message
  assert "looks like a LaMP_2N item" in message
  # Right fields for LaMP_4, plus one of LaMP_2N's.
  questions = [{"id": "q1", "input": tasks.make_input("LaMP_4", text="x"), "profile": [news]}]
  message = _error(_official(tmp_path, questions, [("q1", "T")], task="LaMP_4"), "LaMP_4")
  assert "(id 'n1'): field 'category' is not a LaMP_4 field; it looks like a LaMP_2N item" in (
      message)


def test_query_of_another_task(tmp_path):
  questions = [{"id": "q1", "input": tasks.make_input("LaMP_4", text="x"),
                "profile": [_review("i1")]}]
  message = _error(_official(tmp_path, questions, [("q1", "3")]))
  assert "dev_questions.json: record 0 (id 'q1'): LaMP_3 input lacks the marker" in message


def test_non_string_field(tmp_path):
  path = _official(tmp_path, [_question("q1", [_review("i1", score=4)])], [("q1", "3")])
  assert "(id 'i1'): field 'score' must be a string, got int" in _error(path)


def test_gold_that_is_not_a_label(tmp_path):
  path = _official(tmp_path, [_question("q1", [_review("i1")])], [("q1", "great")])
  assert "dev_outputs.json: gold 0 (id 'q1'): gold 'great' is not a LaMP_3 label" in _error(path)


def test_directory_in_neither_layout(tmp_path):
  (tmp_path / "notes.txt").write_text("hi")
  message = _error(str(tmp_path))
  assert str(tmp_path) in message and "{split}_questions.json" in message
  assert "user_top_100_history.json" in message


def test_oppu_layout_errors(tmp_path):
  users = [{"user_id": "u1", "profile": [_review("i1")],
            "query": [{"id": "q1", "input": tasks.make_input("LaMP_3", text="x")}]}]
  _dump(tmp_path / lamp.OPPU_FILES["test"], users)
  _dump(tmp_path / lamp.OPPU_FILES["labels"], {"task": "LaMP_3", "golds": []})
  message = _error(str(tmp_path))
  assert "user_top_100_history.json: user 0 (user_id 'u1') query 0 (id 'q1'): query has no gold" in (
      message)
  _dump(tmp_path / lamp.OPPU_FILES["labels"],
        {"task": "LaMP_3", "golds": [{"id": "q1", "output": "2"}]})
  _dump(tmp_path / lamp.OPPU_FILES["profiles"], [{"output": "a"}, {"output": "b"}])
  message = _error(str(tmp_path))
  assert "profile_user_100.json: expected a list of 1 profiles aligned with the users" in message
  os.remove(tmp_path / lamp.OPPU_FILES["profiles"])
  data = lamp.load(str(tmp_path), "LaMP_3")
  assert data.users[0].queries[0].gold == "2"


def test_writers_without_golds(tmp_path):
  data = synth.synthesize("LaMP_3", num_users=4, history_min=2, history_max=3)
  blind = type(data)(data.task, tuple(
      type(u)(u.id, u.history, tuple(type(q)(q.id, q.input, None, q.date) for q in u.queries))
      for u in data.users))
  lamp_write.write_official_layout(blind, str(tmp_path / "official"))
  assert sorted(os.listdir(tmp_path / "official")) == ["dev_questions.json", "train_questions.json"]
  assert lamp.load(str(tmp_path / "official"), "LaMP_3") == blind
  lamp_write.write_oppu_layout(blind, str(tmp_path / "oppu"), num_test_users=2)
  assert {u.id: u for u in lamp.load(str(tmp_path / "oppu"), "LaMP_3").users} == {
      u.id: u for u in blind.users}
  partial = type(data)(data.task, (blind.users[0],) + data.users[1:])
  with pytest.raises(DataError, match="queries lack golds"):
    lamp_write.write_official_layout(partial, str(tmp_path / "partial"))
