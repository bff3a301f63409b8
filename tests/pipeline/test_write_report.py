"""write_report on hand-written prediction files: no model needed."""

import types

import pytest

from oppu_jax.data import lamp_write, tasks
from oppu_jax.data.types import Query, User
from oppu_jax.errors import DataError
from oppu_jax.pipeline import results
from oppu_jax.pipeline.settings import SETTINGS


def _experiment(tmp_path):
  users = (User("u1", ({"id": "h", "text": "t", "score": "3"},), (Query("a", "x", "3"),
                                                                   Query("b", "y", "4"))),)
  exp = types.SimpleNamespace(task=tasks.get_task("LaMP_3"), test_users=users, workdir=str(tmp_path),
                              settings=[SETTINGS["non_personalized"], SETTINGS["oppu_k0"]],
                              config=types.SimpleNamespace(seed=0))
  exp.path = lambda *parts: str(tmp_path.joinpath(*parts))
  (tmp_path / "predictions").mkdir()
  return exp


def test_a_missing_prediction_names_the_file_and_the_id(tmp_path):
  exp = _experiment(tmp_path)
  lamp_write.write_predictions(exp.path("predictions", "non_personalized.json"), "LaMP_3",
                         {"a": "3", "b": "3"})
  lamp_write.write_predictions(exp.path("predictions", "oppu_k0.json"), "LaMP_3", {"a": "3"})
  with pytest.raises(DataError, match=r"oppu_k0.json: no prediction for query id 'b'"):
    results.write_report(exp)


def test_results_and_significance_files(tmp_path):
  exp = _experiment(tmp_path)
  for name, preds in (("non_personalized", {"a": "5", "b": "5"}), ("oppu_k0", {"a": "3", "b": "4"})):
    lamp_write.write_predictions(exp.path("predictions", f"{name}.json"), "LaMP_3", preds)
  scored = results.write_report(exp)
  assert scored == {"non_personalized": {"mae": 1.5, "rmse": pytest.approx((2.5) ** 0.5)},
                     "oppu_k0": {"mae": 0.0, "rmse": 0.0}}
  table = (tmp_path / "results.md").read_text()
  assert "2 queries of 1 user." in table and (tmp_path / "significance.json").exists()
