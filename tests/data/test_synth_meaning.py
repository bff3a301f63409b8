"""The meaning-cued generator: phrasings a query's user never wrote, habits beyond a shift, and
oracles that are what its docstring says."""

import os
import random
import re

import pytest

from oppu_jax import config as config_lib
from oppu_jax.data import lamp
from oppu_jax.data import synth
from oppu_jax.data import synth_meaning
from oppu_jax.data.phrases import movies
from oppu_jax.data.phrases import research
from oppu_jax.data.phrases import reviews
from oppu_jax.data import tasks
from oppu_jax.errors import ConfigError

TASKS = ("LaMP_2M", "LaMP_3", "LaMP_5")


def _meaning(**kwargs):
  return {"kind": "meaning", "shift": 1.0, **kwargs}


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_files_and_the_layout_loads(tmp_path, name):
  for d, seed in (("a", 3), ("b", 3), ("c", 4)):
    synth.generate(name, str(tmp_path / d), num_users=10, seed=seed, **_meaning())
  files = {d: {n: (tmp_path / d / n).read_bytes() for n in sorted(os.listdir(tmp_path / d))}
           for d in "abc"}
  assert files["a"] == files["b"] != files["c"]
  data = lamp.load(str(tmp_path / "a"), tasks.get_task(name))
  assert len(data.users) == 10 and all(u.history and u.queries for u in data.users)


@pytest.mark.parametrize("name", TASKS)
def test_query_phrasings_are_never_in_their_users_history_but_in_others(name):
  far = synth.oracle_report(name, num_users=40, **_meaning())
  near = synth.oracle_report(name, num_users=40, **_meaning(shift=0.0))
  assert far["query_history_overlap"]["mean"] == 0.0
  # At shift 0 a query draws from its user's half, not all of which the history has used yet.
  assert near["query_history_overlap"]["mean"] > 0.3
  # Other users write with their own halves: a query's phrasing is somewhere in the corpus.
  data, latents = synth._build(name, synth._Config(num_users=40, **_meaning()))
  corpus = {w for lat in latents.values() for d in lat.history for w in d.topic_words}
  query_words = [w for lat in latents.values() for d in lat.queries for w in d.topic_words]
  assert sum(w in corpus for w in query_words) / len(query_words) > 0.9
  del data


def test_a_query_draws_from_the_other_half_with_probability_shift():
  rng = random.Random(0)
  family, own = tuple("abcdefgh"), frozenset({0, 2, 4, 6})
  for shift, query, expect_own in ((1.0, True, False), (0.0, True, True), (1.0, False, True)):
    cfg = synth._Config(shift=shift)
    for _ in range(50):
      [(_, i)] = synth_meaning._phrases(rng, family, own, cfg, query)
      assert (i in own) == expect_own
  two = synth_meaning._phrases(rng, family, own, synth._Config(), False, k=2)
  assert two[0] != two[1]


@pytest.mark.parametrize("name", TASKS)
def test_true_habit_oracle_is_exact_without_noise(name):
  report = synth.oracle_report(name, num_users=30, **_meaning(noise=0.0))
  metric = next(iter(report))
  perfect = 0.0 if metric == "MAE" else 1.0
  assert report[metric]["personalized"] == pytest.approx(perfect)


def test_rating_habits():
  assert [synth_meaning.rate({"kind": "compress"}, r, "x") for r in range(1, 6)] == [3, 3, 4, 4, 5]
  assert [synth_meaning.rate({"kind": "extreme"}, r, "x") for r in range(1, 6)] == [1, 1, 3, 5, 5]
  assert [synth_meaning.rate({"kind": "shift", "bias": -2}, r, "x")
          for r in range(1, 6)] == [1, 1, 1, 2, 3]
  by = {"kind": "by_category", "bias": {"sports": -1, "travel": 1}}
  assert [synth_meaning.rate(by, 3, c) for c in ("sports", "travel", "parents")] == [2, 4, 3]
  habits = synth.user_habits("LaMP_3", num_users=200, **_meaning())
  kinds = {h.split(" ")[0] for h in habits.values()}
  assert kinds == {"shift", "compress", "extreme", "by", "none"}


def test_lamp3_from_history_fits_the_habit_family():
  """With long histories and no noise, the fitted habit reproduces the true one's golds; the text
  alone is far off (habits move most ratings)."""
  mae = synth.oracle_report("LaMP_3", num_users=60, history_min=40, history_max=60,
                            long_tail=False, **_meaning(noise=0.0))["MAE"]
  assert mae["from_history"] < 0.1
  assert mae["non_personalized"] > 0.5


def test_noise_is_off_by_one():
  data, latents = synth._build("LaMP_3", synth._Config(num_users=100, **_meaning(noise=0.15)))
  off = []
  for user in data.users:
    lat = latents[user.id]
    for d in lat.history:
      true = synth_meaning.rate(lat.pref["habit"], d.latent["r"], d.latent["category"])
      off.append(abs(int(d.gold) - true))
  assert set(off) == {0, 1}
  assert 0.1 < sum(off) / len(off) < 0.2


def test_lamp2m_personal_order_beats_popularity():
  acc = synth.oracle_report("LaMP_2M", num_users=60, **_meaning())["accuracy"]
  assert acc["personalized"] > acc["from_history"] > acc["non_personalized"] + 0.15


def test_lamp2m_descriptions_name_no_tag():
  data = synth.synthesize("LaMP_2M", num_users=20, **_meaning())
  tag_words = {w for t in tasks.get_task("LaMP_2M").labels for w in re.split(r"[^a-z]+", t)
               if w not in ("", "a", "on")}  # "based on a book": its function words may appear
  for user in data.users:
    for item in user.history:
      words = set(re.split(r"[^a-z]+", item["description"].lower()))
      assert not words & tag_words, item["description"]


def test_families_split_in_equal_halves():
  families = [*movies.MOVIE_CUES.values(), *reviews.PRODUCTS.values(),
              *reviews.REVIEW_CUES.values(), research.ABSTRACT_FRAMES, research.CONTEXT_FRAMES]
  families += [f for topic in research.RESEARCH.values() for f in topic.values()]
  for family in families:
    assert len(family) % 2 == 0 and len(set(family)) == len(family), family[0]


def test_review_cues_carry_no_digits_or_stars():
  for clauses in reviews.REVIEW_CUES.values():
    for clause in clauses:
      assert not re.search(r"\d|\bstars?\b", clause), clause


def test_lamp5_titles_follow_the_template_the_oracles_read():
  data, latents = synth._build("LaMP_5", synth._Config(num_users=20, **_meaning(noise=0.0)))
  for user in data.users:
    lat = latents[user.id]
    for q, ql in zip(user.queries, lat.queries):
      assert ql.latent["method"] in q.input and ql.latent["problem"] in q.input
      assert q.gold == synth_meaning.ORACLES["LaMP_5"]("personalized", lat, ql)
  rouge = synth.oracle_report("LaMP_5", num_users=40, **_meaning())["ROUGE-1"]
  assert rouge["personalized"] > rouge["from_history"] - 0.05
  assert rouge["from_history"] > rouge["non_personalized"] + 0.1


def test_meaning_recipe_and_one_line_errors():
  c = config_lib.for_task("LaMP_3", "meaning")
  config_lib.check(c)
  assert c.data.synth.kind == "meaning" and c.data.num_test_users == 12
  c = config_lib.for_task("LaMP_1", "meaning")
  with pytest.raises(ConfigError, match="data.synth.kind='meaning' generates LaMP_2M"):
    config_lib.check(c)
  c = config_lib.for_task("LaMP_3")
  c.data.synth.kind = "semantic"
  with pytest.raises(ConfigError, match="config.data.synth.kind: unknown 'semantic'"):
    config_lib.check(c)
