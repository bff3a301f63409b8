import importlib.util
import json
import sys

import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

from oppu_jax.data import tfds_lamp  # noqa: E402
from oppu_jax.data.types import DataError  # noqa: E402

INPUT = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, "
         "2, 3, 4, or 5 without further explanation. review: {}")


def _question(qid, user, review, n_items):
  profile = [{"id": f"{qid}-{j}", "text": f"older review {j} — naïve café",
              "score": str(1 + j % 5), "date": f"2015-01-{j + 1:02d}"} for j in range(n_items)]
  return {"id": qid, "input": INPUT.format(review), "profile": profile, "user_id": user}


def _write(path, obj):
  path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def manual_dir(tmp_path):
  """A tiny official-format LaMP_3 directory: train and dev with golds, test without."""
  root = tmp_path / "manual" / "LaMP_3"
  root.mkdir(parents=True)
  splits = {
      "train": [_question("310", "u1", "great value", 2), _question("311", "u2", "broke fast", 0),
                _question("312", "u1", "ok", 3)],
      "dev": [_question("320", "u3", "loved it", 1)],
      "test": [_question("330", "u3", "meh", 4)],
  }
  golds = {"310": "5", "311": "1", "312": "3", "320": "4"}
  for split, questions in splits.items():
    _write(root / f"{split}_questions.json", questions)
    if split != "test":
      _write(root / f"{split}_outputs.json", {"task": "LaMP_3", "golds": [
          {"id": q["id"], "output": golds[q["id"]]} for q in questions]})
  return tmp_path / "manual", splits, golds


def test_prepare_and_read_back_without_tensorflow(manual_dir, tmp_path):
  manual, splits, golds = manual_dir
  assert importlib.util.find_spec("tensorflow") is None
  builder = tfds_lamp.prepare("LaMP_3", manual, tmp_path / "tfds")
  sources = builder.as_data_source()
  assert set(sources) == {"train", "dev", "test"}
  for split, questions in splits.items():
    source = sources[split]
    assert len(source) == len(questions)
    for i, q in enumerate(questions):  # file order is kept
      record = tfds_lamp.decode_record(source[i])
      assert record == {"id": q["id"], "input": q["input"], "output": golds.get(q["id"], ""),
                        "user_id": q["user_id"], "profile": q["profile"]}
  # The registered name reads the same data back through tfds.data_source.
  again = tfds.data_source("lamp/LaMP_3", data_dir=str(tmp_path / "tfds"))
  assert tfds_lamp.decode_record(again["dev"][0])["output"] == "4"
  assert "tensorflow" not in sys.modules


def test_files_directly_in_manual_dir(manual_dir, tmp_path):
  manual, splits, _ = manual_dir
  flat = manual / "LaMP_3"  # as the manual dir itself: no LaMP_3/ below it
  builder = tfds_lamp.prepare("LaMP_3", flat, tmp_path / "tfds2")
  assert len(builder.as_data_source()["train"]) == len(splits["train"])


def test_mismatched_ids_and_bad_json_name_file_and_record(manual_dir, tmp_path):
  manual, _, _ = manual_dir
  root = manual / "LaMP_3"
  _write(root / "dev_outputs.json", {"task": "LaMP_3", "golds": [{"id": "999", "output": "1"}]})
  with pytest.raises(DataError, match=r"dev_outputs.json: no gold for question id '320'"):
    tfds_lamp.prepare("LaMP_3", manual, tmp_path / "tfds3")
  (root / "dev_outputs.json").write_text("{not json", encoding="utf-8")
  with pytest.raises(DataError, match=r"dev_outputs.json: invalid JSON"):
    tfds_lamp.prepare("LaMP_3", manual, tmp_path / "tfds4")
  with pytest.raises(ValueError, match="unknown LaMP task 'LaMP_9'"):
    tfds_lamp.prepare("LaMP_9", manual, tmp_path / "tfds5")


def test_missing_tfds_is_one_clear_line(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
  with pytest.raises(ImportError, match=r"pip install 'oppu-jax\[tfds\]'"):
    tfds_lamp._tfds()
