"""Behaviour shift: the shifted rows read a cut history, and the table's changes are the MAE
differences of the two prediction files, computed here by hand."""

import os

import numpy as np
import pytest

from analysis_helpers import golds_and_preds, mae, read, table_rows


def test_changes_are_shifted_minus_full(analysed):
  _, workdir = analysed
  data = read(workdir, "behaviour_shift")
  assert data["non_personalized"] == pytest.approx(mae(*golds_and_preds(workdir,
                                                                         "non_personalized")))
  for label, row in data["methods"].items():
    full = mae(*golds_and_preds(workdir, row["setting"]))
    assert row["shifted_setting"] == row["setting"] + "@shift50"
    shifted = mae(*golds_and_preds(workdir, row["shifted_setting"]))
    assert (row["full"], row["shift"], row["change"]) == pytest.approx(
        (full, shifted, shifted - full)), label
  assert sorted(r[0] for r in table_rows(workdir, "behaviour_shift")) == sorted(data["methods"])


def test_history_is_cut_to_the_kept_share(analysed):
  config, workdir = analysed
  from oppu_jax.data import lamp

  data = lamp.load(os.path.join(workdir, "data"), "LaMP_3")
  test, _ = lamp.select_users(data, config.data.num_test_users, config.data.test_users)
  sizes = [len(u.history) for u in test.users]
  shift = read(workdir, "behaviour_shift")
  assert shift["items_total"] == sum(sizes)
  assert shift["items_kept"] == sum(max(1, round(0.5 * n)) for n in sizes)
  # The cut really reached the adapters: trained on other items, they differ from the full ones.
  from safetensors.numpy import load_file

  user = test.users[0].id
  full, cut = (load_file(os.path.join(workdir, "adapters", s, user, "adapter_model.safetensors"))
               for s in ("oppu_k0", "oppu_k0@shift50"))
  assert any(not np.array_equal(full[k], cut[k]) for k in full)


def test_least_similar_keeps_the_least_similar_items():
  from oppu_jax.data.types import Query, User
  from oppu_jax.pipeline import examples
  from oppu_jax.data import tasks

  task = tasks.get_task("LaMP_3")
  history = tuple({"id": f"h{i}", "text": f"t{i}", "score": "3", "date": f"2020-01-0{i + 1}"}
                  for i in range(5))
  user = User("u", history, (Query("q", tasks.make_input(task, text="x"), "3", "2021-01-01"),))
  # A fake scorer: item i's similarity is (i * 3) % 5 -> 0, 3, 1, 4, 2; keep 40 % = 2 items.
  scores = lambda query, texts: np.array([(int(t[1:]) * 3) % 5 for t in texts], float)
  (cut,) = examples.least_similar_histories(task, [user], 0.4, scores)
  assert [h["id"] for h in cut.history] == ["h0", "h2"]  # time order kept
