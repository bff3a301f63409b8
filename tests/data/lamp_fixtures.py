"""Small LaMP files in the shapes the releases publish, for the loader and pipeline tests.

Each writer puts files on disk exactly as the release does (field names, nesting, which fields
are absent), with made-up texts:
- LaMP's time-based release: an integer `user_id` on every sample, no question-level `date`,
  and each sample's own `profile`: that user's items before the sample (`time_based_user`).
- OPPU's processed LaMP_1: profile items carrying `citation` (`write_oppu_citation`).
- LaMP_6 after LaMP's `data/avocado/create_avocado_dataset.py` (`write_avocado_processed`:
  `test_questions.json` is an object `{"task", "golds": [questions]}`) and before it
  (`write_avocado_raw`: Avocado file ids stand for the texts).
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
from typing import Any

from oppu_jax.data import tasks


def write_json(path, doc: Any) -> str:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(doc, f)
  return str(path)


def write_split(out_dir, split: str, questions: list[dict], golds: dict[str, str] | None,
                task: str) -> str:
  """`{split}_questions.json` (a list) and, when `golds` is given, `{split}_outputs.json`."""
  write_json(os.path.join(out_dir, f"{split}_questions.json"), questions)
  if golds is not None:
    write_json(os.path.join(out_dir, f"{split}_outputs.json"), outputs_doc(task, golds))
  return str(out_dir)


def outputs_doc(task: str, golds: dict[str, str]) -> dict[str, Any]:
  return {"task": task, "golds": [{"id": i, "output": o} for i, o in golds.items()]}


def review(item_id: str, date: str | None = None, score: str = "4") -> dict[str, str]:
  """A LaMP_3 profile item (`date` left out when None, as undated releases do)."""
  item = {"text": f"Review {item_id}: it works as described.", "score": score, "id": item_id}
  if date is not None:
    item["date"] = date
  return item


def time_based_user(user_id: int, items: Sequence[dict], cuts: Sequence[int],
                    first_id: int) -> list[dict]:
  """One user's LaMP_3 samples as the time-based release writes them: sample j has id
  `first_id + j`, the integer `user_id`, no `date`, and `items[:cuts[j]]` as its profile (the
  user's items before the sample)."""
  return [{"id": str(first_id + j),
           "input": tasks.make_input("LaMP_3", text=f"Sample {first_id + j} is fine."),
           "profile": [dict(it) for it in items[:cut]], "user_id": user_id}
          for j, cut in enumerate(cuts)]


def write_oppu_citation(out_dir, citations: Sequence[Any]) -> str:
  """OPPU's processed LaMP_1 (`citation` folder): one test user whose profile items carry
  `citation` where `citations[i]` is not None, with its label file."""
  profile = []
  for i, citation in enumerate(citations):
    item = {"id": f"p{i}", "title": f"Paper {i} on graphs", "abstract": f"We study graph {i}."}
    if citation is not None:
      item["citation"] = citation
    profile.append(item)
  query = {"id": "q0", "input": tasks.make_input("LaMP_1", title="Graph colouring",
                                                 option1="Colouring bounds",
                                                 option2="Protein folding")}
  write_json(os.path.join(out_dir, "user_top_100_history.json"),
             [{"user_id": "1", "profile": profile, "query": [query]}])
  write_json(os.path.join(out_dir, "user_top_100_history_label.json"),
             outputs_doc("LaMP_1", {"q0": "[1]"}))
  return str(out_dir)


def write_avocado_processed(out_dir) -> str:
  """LaMP_6 as `create_avocado_dataset.py` leaves it: train / dev questions lists with outputs,
  and `test_questions.json` as `{"task": "LaMP_6", "golds": [questions]}` without outputs."""
  def sample(qid, n_items):
    profile = [{"id": f"{qid}_{k}", "text": f"Email {k} about the budget.", "title": f"Budget {k}"}
               for k in range(n_items)]
    return {"id": qid, "input": tasks.make_input("LaMP_6", text=f"Email {qid} body."),
            "profile": profile}
  for split, qid in (("train", "600"), ("dev", "601")):
    write_split(out_dir, split, [sample(qid, 2)], {qid: f"Subject {qid}"}, "LaMP_6")
  write_json(os.path.join(out_dir, "test_questions.json"),
             {"task": "LaMP_6", "golds": [sample("602", 3)]})
  return str(out_dir)


def write_avocado_raw(out_dir) -> str:
  """LaMP_6 as released, before `create_avocado_dataset.py`: `input` and each profile item's
  `text` are Avocado file ids, and items have no `title`."""
  questions = [{"id": "600", "input": "102-000123-EM",
                "profile": [{"id": "6000", "text": "102-000045-EM"},
                            {"id": "6001", "text": "102-000077-EM"}]}]
  return write_split(out_dir, "dev", questions, {"600": "Budget"}, "LaMP_6")
