"""The task registry: inputs parse back, prompts carry the right fields, conversions."""

import pytest

from oppu_jax.data import prompts
from oppu_jax.data import tasks
from oppu_jax.data.types import DataError

ALL = tuple(tasks.TASKS)
SLOTS = {"LaMP_1": {"title": 'A "quoted" title', "option1": "Ref one", "option2": "Ref two"}}
ITEMS = {
    "LaMP_1": {"id": "1", "title": "Graph bounds", "abstract": "We bound graphs tightly."},
    "LaMP_2N": {"id": "1", "text": "The senate voted.", "title": "Vote", "category": "politics"},
    "LaMP_2M": {"id": "1", "description": "A wizard's quest.", "tag": "fantasy"},
    "LaMP_3": {"id": "1", "text": "Works fine.", "score": "4"},
    "LaMP_4": {"id": "1", "text": "The team won.", "title": "Team wins"},
    "LaMP_5": {"id": "1", "abstract": "We train nets.", "title": "Training nets"},
    "LaMP_6": {"id": "1", "text": "Meet at noon?", "title": "Lunch"},
    "LaMP_7": {"id": "1", "text": "omg what a day at the beach :)"},
}


def test_get_task_accepts_aliases_and_rejects_unknown_names():
  assert tasks.get_task("LaMP-3").name == "LaMP_3"
  assert tasks.get_task("product_rating").name == "LaMP_3"
  assert tasks.get_task("LaMP_2").name == "LaMP_2M"
  with pytest.raises(DataError, match=r"unknown task 'LaMP_9'; expected one of LaMP_1") as e:
    tasks.get_task("LaMP_9")
  assert "\n" not in str(e.value)


def test_registry_fields_and_labels():
  assert len(tasks.CATEGORIES) == len(set(tasks.CATEGORIES)) == 15
  assert len(tasks.TAGS) == 15
  assert tasks.get_task("LaMP_1").labels == ("[1]", "[2]")
  assert tasks.get_task("LaMP_3").metric == "regression"
  assert tasks.get_task("LaMP_7").metric == "generation"
  for name in ALL:
    task = tasks.get_task(name)
    assert set(task.item_fields) <= set(ITEMS[name]), name
    assert task.aligned == (name not in ("LaMP_1", "LaMP_7"))
  # OPPU's prompt lists the categories in another order: the same set.
  prompt = tasks.get_task("LaMP_2N").prompt
  listed = prompt[prompt.index("[") + 1: prompt.index("]")].split(", ")
  assert set(listed) == set(tasks.CATEGORIES)


@pytest.mark.parametrize("name", ALL)
def test_make_input_and_parse_input_are_inverse(name):
  slots = SLOTS.get(name, {"text": "Body text: with a colon, article: and review: inside."})
  query_input = tasks.make_input(name, **slots)
  assert tasks.parse_input(name, query_input) == slots
  expected = slots["title"] if name == "LaMP_1" else slots["text"]
  assert tasks.query_text(name, query_input) == prompts.retrieval_query(name, query_input) == expected


def test_parse_input_without_marker_raises():
  with pytest.raises(DataError, match="LaMP_3 input lacks the marker"):
    tasks.parse_input("LaMP_3", "Generate a headline for the following article: x")
  with pytest.raises(DataError, match="LaMP_1 input lacks"):
    tasks.parse_input("LaMP_1", "no title here")


def test_build_prompt_lamp3_with_profile_and_history():
  query_input = tasks.make_input("LaMP_3", text="Broke in a day.")
  prompt = prompts.build_prompt("LaMP_3", query_input, [ITEMS["LaMP_3"]], profile="Harsh rater.")
  assert prompt == (
      "Harsh rater.\nreview: Works fine. score: 4\nWhat is the score of the following review on "
      "a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 without further explanation.\n"
      "review: Broke in a day. score:")
  bare = prompts.build_prompt("LaMP_3", query_input)
  assert bare.startswith("What is the score") and bare.endswith("review: Broke in a day. score:")


def test_build_prompt_lamp1_keeps_both_options():
  prompt = prompts.build_prompt("LaMP_1", tasks.make_input("LaMP_1", **SLOTS["LaMP_1"]))
  assert 'paper title: A "quoted" title\nreference: [1] - Ref one [2] - Ref two\nanswer:' in prompt


def test_lamp1_item_with_citation_reads_as_oppus_line():
  # OPPU's processed LaMP_1 items carry `citation`; the official release's do not.
  cited = {**ITEMS["LaMP_1"], "citation": "Tight graph bounds, 2001"}
  line = "paper title: Graph bounds reference: Tight graph bounds, 2001"
  assert prompts.format_item("LaMP_1", cited) == line
  assert prompts.history_to_pairs("LaMP_1", cited) == ("", line)
  assert line in prompts.build_prompt("LaMP_1", tasks.make_input("LaMP_1", **SLOTS["LaMP_1"]),
                                    [cited])
  assert prompts.format_item("LaMP_1", ITEMS["LaMP_1"]) == "paper title: Graph bounds"


@pytest.mark.parametrize("name", ALL)
def test_history_to_pairs_oppu_mode(name):
  item = ITEMS[name]
  prompt, answer = prompts.history_to_pairs(name, item)
  task = tasks.get_task(name)
  if task.aligned:
    assert answer == item[task.output_field]
    assert item[task.input_field] in prompt and not prompt.endswith(answer)
    assert prompt == prompts.build_prompt(name, tasks.make_input(name, text=item[task.input_field]))
  else:
    assert prompt == ""
    assert answer == prompts.format_item(name, item)


def test_history_to_pairs_aligned_with_context_and_errors():
  prompt, answer = prompts.history_to_pairs(
      "LaMP_2M", ITEMS["LaMP_2M"], "aligned", retrieved_items=[ITEMS["LaMP_2M"]], profile="P")
  assert prompt.startswith("P\ndescription: A wizard's quest. tag: fantasy\nWhich tag")
  assert answer == "fantasy"
  with pytest.raises(DataError, match="LaMP_7 history is not task-shaped"):
    prompts.history_to_pairs("LaMP_7", ITEMS["LaMP_7"], "aligned")
  with pytest.raises(DataError, match="unknown history mode 'bogus'"):
    prompts.history_to_pairs("LaMP_3", ITEMS["LaMP_3"], "bogus")


def test_convert_pairs():
  assert prompts.history_to_pairs("LaMP_1", ITEMS["LaMP_1"], "convert") == (
      "Write an abstract for this title: Graph bounds", "We bound graphs tightly.")
  first, second = prompts.history_to_pairs("LaMP_7", ITEMS["LaMP_7"], "convert")
  assert first.startswith("Complete the following tweet: ")
  rest = first[len("Complete the following tweet: "):]
  assert rest and second and f"{rest} {second}" == ITEMS["LaMP_7"]["text"]
  assert prompts.history_to_pairs("LaMP_7", ITEMS["LaMP_7"], "convert") == (first, second)
  # The split point follows the run's seed: over seeds it moves, and each seed repeats itself.
  by_seed = {s: prompts.history_to_pairs("LaMP_7", ITEMS["LaMP_7"], "convert", seed=s)
             for s in range(1, 9)}
  assert len(set(by_seed.values())) > 1
  assert prompts.history_to_pairs("LaMP_7", ITEMS["LaMP_7"], "convert", seed=3) == by_seed[3]
  assert prompts.history_to_pairs("LaMP_4", ITEMS["LaMP_4"], "convert") == (
      "Generate a headline for the following article: The team won.", "Team wins")


def test_model_pair_puts_the_space_on_the_answer():
  assert prompts.model_pair("score:", "3") == ("score:", " 3")
  assert prompts.model_pair("", "tweet: hi") == ("", "tweet: hi")


def test_profile_prompt_joins_and_cuts_items():
  long_item = {"id": "2", "text": " ".join(["word"] * 300), "score": "5"}
  prompt = prompts.profile_prompt("LaMP_3", [ITEMS["LaMP_3"], long_item], max_words=200)
  assert prompt.startswith("Based on this user's past reviews")
  assert "User History: review: Works fine. score: 4 | review: word" in prompt
  assert prompt.endswith(" score: 5 Answer:")
  assert prompt.count("word") == 200


def test_corpus_and_item_query_texts():
  assert prompts.corpus_text("LaMP_1", ITEMS["LaMP_1"]) == "Graph bounds We bound graphs tightly."
  assert prompts.corpus_text("LaMP_4", ITEMS["LaMP_4"]) == "Team wins The team won."
  assert prompts.corpus_text("LaMP_3", ITEMS["LaMP_3"]) == "Works fine."
  assert prompts.item_query_text("LaMP_3", ITEMS["LaMP_3"]) == "Works fine."
  assert prompts.item_query_text("LaMP_5", ITEMS["LaMP_5"]) == "We train nets."
  assert prompts.item_query_text("LaMP_1", ITEMS["LaMP_1"]) == "Graph bounds"


def test_study_prompts_are_its_table_3():
  items2m = [{"description": "a robot", "tag": "sci-fi"}, {"description": "a heist", "tag": "action"}]
  q2m = tasks.make_input("LaMP_2M", text="a spaceship")
  assert prompts.build_study_prompt("LaMP_2M", q2m, items2m) == (
      'the tag for the movie: "a robot" is "sci-fi", and the tag for the movie: "a heist" is '
      f'"action". {q2m}')
  assert prompts.build_study_prompt("LaMP_2M", q2m, []) == q2m
  q3 = tasks.make_input("LaMP_3", text="fine")
  assert prompts.build_study_prompt("LaMP_3", q3, [{"text": "ok", "score": "4"}]) == (
      f'4 is the score for "ok". {q3}')
  q5 = tasks.make_input("LaMP_5", text="we study nets")
  assert prompts.build_study_prompt("LaMP_5", q5, [{"title": "T", "abstract": "A"}]) == (
      f'"T" is the title for "A". Following the given patterns {q5}')
  q7 = tasks.make_input("LaMP_7", text="hello world")
  assert prompts.build_study_prompt("LaMP_7", q7, [{"text": "a"}, {"text": "b"}]) == (
      f'"a", and "b" are written by a person. Following the given patterns {q7}')
  q1 = tasks.make_input("LaMP_1", title="Deep Nets", option1="A", option2="B")
  got = prompts.build_study_prompt("LaMP_1", q1, [{"title": "X"}, {"title": "Y"}])
  at = q1.find("title") + 5
  assert got == q1[:at] + ', and "X", and "Y"' + q1[at:]  # LaMP's add_string_after_title
