"""Write LaMP files: predictions in LaMP's outputs shape, and a data set in either released
layout (the layouts are described in `lamp`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import json
import math
import os
from typing import Any

from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.lamp import OPPU_FILES, select_users
from oppu_jax.data.lamp_records import task_family
from oppu_jax.data.types import LampData, User
from oppu_jax.errors import DataError


def write_predictions(path: str, task: str | tasks_lib.Task, outputs: Mapping[str, str]) -> None:
  """Writes {id: output} in the LaMP outputs shape ({"task", "golds": [{"id", "output"}]}),
  named as LaMP's evaluator knows the task: LaMP_2N and LaMP_2M are both "LaMP_2"."""
  name = task if isinstance(task, str) else task.name
  _write_json(path, _outputs_doc(name, outputs.items()))


def write_official_layout(data: LampData, out_dir: str, dev_fraction: float = 0.5) -> None:
  """Writes `train_*` and `dev_*` files: per user, the last ceil(dev_fraction * q) of its q
  queries go to dev, the rest to train. Every record carries the user's whole history and its
  query's `date` where it has one, so `load` gives the same users back when each history is
  undated or dated at or before its user's earliest query (as `synth` writes them)."""
  os.makedirs(out_dir, exist_ok=True)
  split_records: dict[str, list[dict[str, Any]]] = {"train": [], "dev": []}
  split_golds: dict[str, list[tuple[str, str]]] = {"train": [], "dev": []}
  for user in data.users:
    n_dev = math.ceil(dev_fraction * len(user.queries))
    for i, q in enumerate(user.queries):
      split = "dev" if i >= len(user.queries) - n_dev else "train"
      record = {"id": q.id, "input": q.input, "profile": list(user.history), "user_id": user.id}
      if q.date is not None:
        record["date"] = q.date
      split_records[split].append(record)
      if q.gold is not None:
        split_golds[split].append((q.id, q.gold))
  for split, records in split_records.items():
    _write_json(os.path.join(out_dir, f"{split}_questions.json"), records)
    if _all_or_none(split_golds[split], records, out_dir):
      _write_json(os.path.join(out_dir, f"{split}_outputs.json"),
                  _outputs_doc(data.task, split_golds[split]))


def write_oppu_layout(data: LampData, out_dir: str, num_test_users: int = 100) -> None:
  """Writes OPPU's processed layout: the `num_test_users` most active users as the "top 100"
  files (the names stay, whatever the number), everyone else in `user_others.json`, and
  the profile files when every user of the part has a profile in `data.profiles`."""
  os.makedirs(out_dir, exist_ok=True)
  test, others = select_users(data, num_test_users)
  _write_json(os.path.join(out_dir, OPPU_FILES["test"]),
              [_oppu_user(u, with_gold=False) for u in test.users])
  golds = [(q.id, q.gold) for u in test.users for q in u.queries if q.gold is not None]
  if _all_or_none(golds, [q for u in test.users for q in u.queries], out_dir):
    _write_json(os.path.join(out_dir, OPPU_FILES["labels"]), _outputs_doc(data.task, golds))
  _write_json(os.path.join(out_dir, OPPU_FILES["others"]),
              [_oppu_user(u, with_gold=True) for u in others.users])
  for key, part in (("profiles", test), ("other_profiles", others)):
    if part.users and all(u.id in data.profiles for u in part.users):
      _write_json(os.path.join(out_dir, OPPU_FILES[key]),
                  [{"id": u.id, "output": data.profiles[u.id]} for u in part.users])


def _oppu_user(user: User, with_gold: bool) -> dict[str, Any]:
  queries = []
  for q in user.queries:
    entry: dict[str, Any] = {"id": q.id, "input": q.input}
    if q.date is not None:
      entry["date"] = q.date
    if with_gold and q.gold is not None:
      entry["gold"] = q.gold
    queries.append(entry)
  return {"user_id": user.id, "profile": list(user.history), "query": queries}


def _write_json(path, doc) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)


def _outputs_doc(task_name: str, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
  # LaMP's evaluator knows LaMP_1 .. LaMP_7 only, and matches predictions to golds by this name.
  name = f"LaMP_{task_family(tasks_lib.get_task(task_name).name)}"
  return {"task": name, "golds": [{"id": i, "output": o} for i, o in pairs]}


def _all_or_none(golds, queries, out_dir) -> bool:
  # A golds file must cover every question of its split, or the loader rejects it.
  if golds and len(golds) != len(queries):
    raise DataError(f"{out_dir}: {len(queries) - len(golds)} of {len(queries)} queries lack "
                    "golds; a split has golds for all its queries or for none")
  return bool(golds)
