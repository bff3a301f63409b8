"""examples.query_prompts for Table 1's random_history: items drawn from every user's history
(data.random_history "corpus", the paper's reading) or from the user's own ("own")."""

import dataclasses
import functools

import pytest

from oppu_jax import config as config_lib
from oppu_jax.data import retrieval, synth
from oppu_jax.data import prompts as prompts_lib
from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.types import date_key
from oppu_jax.errors import ConfigError
from oppu_jax.pipeline import examples
from oppu_jax.pipeline.settings import SETTINGS

TASK = tasks_lib.get_task("LaMP_3")
RANDOM = SETTINGS["random_history"]
RANDOM_K4 = dataclasses.replace(RANDOM, k=4)


@pytest.fixture(scope="module")
def users():
  return synth.synthesize("LaMP_3", seed=0, num_users=6, history_min=5, history_max=8,
                          queries_per_user=3, text_words=6).users


def _drawn(users, user, setting, corpus):
  """The history lines in each of `user`'s prompts, by query id."""
  prompts = examples.query_prompts(TASK, user, setting, None, seed=0, corpus=corpus)
  return {qid: prompt.split("\n")[:-2] for qid, prompt in prompts}


def test_corpus_draws_other_users_items(users):
  corpus = examples.random_history_corpus(users, "corpus")
  assert len(corpus) == sum(len(u.history) for u in users)
  lines = {prompts_lib.format_item(TASK, item): u.id for u in users for item in u.history}
  owners = {lines[line] for u in users for drawn in _drawn(users, u, RANDOM_K4, corpus).values()
            for line in drawn}
  assert len(owners) > 1  # not only each query's own user


def test_corpus_items_are_dated_before_the_query(users):
  corpus = examples.random_history_corpus(users, "corpus")
  for user in users:
    for q in user.queries:
      idx = retrieval.random_from_corpus(corpus, 4, query_date=q.date, seed=0, salt=q.id)
      assert len(set(idx)) == len(idx) <= 4
      assert all(date_key(corpus[j]["date"]) < date_key(q.date) for j in idx)


def test_corpus_is_deterministic_and_independent_of_the_user(users):
  corpus = examples.random_history_corpus(users, "corpus")
  first = [_drawn(users, u, RANDOM_K4, corpus) for u in users]
  again = [_drawn(users, u, RANDOM_K4, corpus) for u in reversed(users)][::-1]
  assert first == again
  # The draw is keyed by (seed, query id): the same query asked by a user with another
  # history gets the same items.
  stranger = dataclasses.replace(users[0], id="someone_else", history=users[1].history)
  assert _drawn(users, stranger, RANDOM_K4, corpus) == first[0]
  other_seed = examples.query_prompts(TASK, users[0], RANDOM_K4, None, seed=1, corpus=corpus)
  assert [p for _, p in other_seed] != [p for _, p in examples.query_prompts(
      TASK, users[0], RANDOM_K4, None, seed=0, corpus=corpus)]


def test_own_reproduces_the_per_user_draw(users):
  assert examples.random_history_corpus(users, "own") is None
  for user in users:
    got = examples.query_prompts(TASK, user, RANDOM, None, seed=3, corpus=None)
    want = []
    for q in user.queries:
      idx = retrieval.retrieve_for_query(
          user.history, prompts_lib.retrieval_query(TASK, q.input), 1,
          doc_text=functools.partial(prompts_lib.corpus_text, TASK), query_date=q.date,
          method="random", seed=3, user_id=user.id, salt=q.id)
      want.append((q.id, prompts_lib.build_prompt(TASK, q.input, [user.history[j] for j in idx])))
    assert got == want


def test_corpus_leaves_other_retrievers_alone(users):
  corpus = examples.random_history_corpus(users, "corpus")
  rag = SETTINGS["rag_k2"]
  assert (examples.query_prompts(TASK, users[0], rag, None, seed=0, corpus=corpus)
          == examples.query_prompts(TASK, users[0], rag, None, seed=0))


def test_config_default_and_check():
  c = config_lib.get_config()
  assert c.data.random_history == "corpus"
  c.data.random_history = "everyone"
  with pytest.raises(ConfigError, match="data.random_history"):
    config_lib.check(c)
  with pytest.raises(ValueError, match="random_history"):
    examples.random_history_corpus((), "everyone")
