"""History-format ablation: the rows are their settings' MAE by hand, and the one-sided modes
train on one field of each item only."""

import pytest

from analysis_helpers import golds_and_preds, mae, read


def test_rows_are_each_formats_mae(analysed):
  _, workdir = analysed
  data = read(workdir, "history_format")
  settings = {"full items": "oppu_k0", "input side only": "oppu_k0@input",
              "output side only": "oppu_k0@output"}
  for label, setting in settings.items():
    assert data["formats"][label] == pytest.approx(mae(*golds_and_preds(workdir, setting)))


def test_one_sided_pairs():
  from oppu_jax.data import prompts

  item = {"id": "h1", "text": "a fine kettle", "score": "4"}
  assert prompts.history_to_pairs("LaMP_3", item, "input_only") == ("", "a fine kettle")
  assert prompts.history_to_pairs("LaMP_3", item, "output_only") == ("", "4")
  from oppu_jax.errors import DataError

  with pytest.raises(DataError, match="not task-shaped"):
    prompts.history_to_pairs("LaMP_7", {"id": "h", "text": "a tweet"}, "input_only")
