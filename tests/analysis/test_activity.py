"""Activity levels: the buckets, rebuilt here from the data, and each bucket's MAE by hand."""

import os

import pytest

from analysis_helpers import golds_and_preds, mae, read, table_rows


@pytest.mark.slow
def test_buckets_and_their_mae(analysed):
  config, workdir = analysed
  from oppu_jax.data import lamp

  data = lamp.load(os.path.join(workdir, "data"), "LaMP_3")
  test, _ = lamp.select_users(data, config.data.num_test_users, config.data.test_users)
  users = sorted(test.users, key=lambda u: (len(u.history), u.id))
  half = (len(users) + 1) // 2
  expected = [users[:half], users[half:]]
  result = read(workdir, "activity")
  assert result["users"] == [[u.id for u in b] for b in expected]
  for name, setting in (("non-personalized", "non_personalized"), ("RAG (k=1)", "rag_k1"),
                        ("OPPU (k=0)", "oppu_k0"), ("OPPU + RAG (k=1)", "oppu_k1")):
    golds, preds = golds_and_preds(workdir, setting)
    per_bucket = [mae(golds, preds, [q.id for u in b for q in u.queries]) for b in expected]
    assert result["series"][name] == pytest.approx(per_bucket), name
  rows = table_rows(workdir, "activity")
  assert [r[0] for r in rows] == [f"{len(b[0].history)}-{len(b[-1].history)}" for b in expected]


def test_spread_selection_covers_the_history_range():
  from oppu_jax.data import lamp, synth

  data = synth.synthesize("LaMP_3", num_users=20, seed=0, history_min=4, history_max=40,
                          long_tail=False)
  test, others = lamp.select_users(data, 5, "spread")
  lengths = sorted(len(u.history) for u in data.users)
  chosen = [len(u.history) for u in test.users]
  assert chosen[0] == lengths[-1] and chosen[-1] == lengths[0]  # both ends of the range
  assert len(test.users) == 5 and len(others.users) == 15


def test_cold_start_users_are_a_bucket_of_their_own():
  from oppu_jax.analysis import activity
  from oppu_jax.data.types import User

  users = [User(f"u{i}", tuple({"text": "t", "score": "3"} for _ in range(n)), ())
           for i, n in enumerate([0, 7, 2, 9, 1, 12, 5])]
  groups = activity.user_groups(users, 2, cold_limit=2)
  assert [[len(u.history) for u in g] for g in groups] == [[0, 1, 2], [5, 7], [9, 12]]
  assert [len(g) for g in activity.user_groups(users, 2, cold_limit=-1)] == [4, 3]
