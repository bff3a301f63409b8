"""Checks of LaMP's JSON records, shared by the readers in `lamp`.

Each check raises DataError with one line naming the file and the record: questions, queries and
golds need a string id not seen before; history items need their task's fields as strings (a
foreign field names the task the item looks like); gold outputs must be strings, and one of the
task's labels where it has labels; LaMP_6's raw release (Avocado file ids for the emails) is
named as such.
"""

from __future__ import annotations

import json
import re
from typing import Any

from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.types import Query
from oppu_jax.errors import DataError


def check_texts_built(task, rec: dict[str, Any], where: str) -> None:
  """LaMP_6 is released with Avocado file ids where the emails go (`input`, and items' `text`
  without `title`); LaMP's script puts the texts in. Say so instead of a missing field."""
  if task.name != "LaMP_6":
    return
  profile = rec.get("profile") if isinstance(rec.get("profile"), list) else []
  ids = [rec.get("input")] + [p.get("text") for p in profile
                              if isinstance(p, dict) and "title" not in p]
  file_id = next((t for t in ids if isinstance(t, str) and t and len(t.split()) == 1), None)
  if file_id is not None:
    raise DataError(f"{where}: {file_id!r} is an Avocado file id, not an email: this is LaMP_6's "
                    "raw release; build the texts with LaMP's "
                    "data/avocado/create_avocado_dataset.py first")


def record_with_id(rec, where: str, seen: dict[str, str], source: str, kind: str):
  """A question, query or gold record: an object with a string id not seen before.

  Returns (`where` naming the id, the id); records the id as coming from `source`.
  """
  if not isinstance(rec, dict):
    raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
  where = f"{where} (id {rec.get('id')!r})"
  qid = string_field(rec, "id", where)
  if qid in seen:
    raise DataError(f"{where}: duplicate {kind} id (also in {seen[qid]})")
  seen[qid] = source
  return where, qid


def pop_gold(golds: dict, qid: str, where: str, gold_file: str, kind: str):
  if qid not in golds:
    raise DataError(f"{where}: {kind} has no gold in {gold_file}")
  return golds.pop(qid)


def to_query(task, rec, gold, where, split) -> Query:
  """The Query of a question or query record whose `input` the task's parser accepts."""
  text = string_field(rec, "input", where)
  try:
    tasks_lib.parse_input(task, text)
  except DataError as e:
    raise DataError(f"{where}: {e}") from None
  date = rec.get("date")
  return Query(rec["id"], text, gold, None if date is None else str(date), split)


def check_profile(task, profile, where) -> list[dict[str, Any]]:
  if not isinstance(profile, list):
    raise DataError(f"{where}: missing field 'profile' (a list of history items)")
  if not profile:
    raise DataError(f"{where}: empty history (profile has no items)")
  return [_check_item(task, item, f"{where}: profile item {j}") for j, item in enumerate(profile)]


def _check_item(task, item, where) -> dict[str, Any]:
  if not isinstance(item, dict):
    raise DataError(f"{where}: expected an object, got {type(item).__name__}")
  where = f"{where} (id {item.get('id')!r})"
  foreign = sorted((set(item) & tasks_lib.ALL_ITEM_FIELDS) - set(task.item_fields))
  missing = [f for f in ("id",) + task.item_fields if f not in item]
  if missing or foreign:
    guess = _guess_task(item)
    hint = f"; it looks like a {guess} item" if guess and guess != task.name else ""
    if missing:
      raise DataError(f"{where}: missing field {missing[0]!r} of a {task.name} item{hint}")
    raise DataError(f"{where}: field {foreign[0]!r} is not a {task.name} field{hint}")
  for f in ("id",) + task.item_fields + tuple(f for f in task.optional_fields if f in item):
    string_field(item, f, where)
  if "date" in item and not isinstance(item["date"], (str, int)):
    raise DataError(f"{where}: field 'date' must be a string, got {type(item['date']).__name__}")
  return item


def _guess_task(item) -> str:
  fits = [t for t in tasks_lib.TASKS.values() if set(t.item_fields) <= set(item)]
  if not fits:
    return ""
  most = max(len(t.item_fields) for t in fits)
  return "/".join(t.name for t in fits if len(t.item_fields) == most)


def string_field(rec, field, where) -> str:
  if field not in rec:
    raise DataError(f"{where}: missing field {field!r}")
  if not isinstance(rec[field], str):
    raise DataError(f"{where}: field {field!r} must be a string, got {type(rec[field]).__name__}")
  return rec[field]


def read_golds(path, task) -> dict[str, str]:
  doc = read_json(path)
  if not isinstance(doc, dict) or not isinstance(doc.get("golds"), list):
    raise DataError(f"{path}: expected {{\"task\": ..., \"golds\": [{{\"id\", \"output\"}}]}}")
  if task is not None and "task" in doc and task_family(str(doc["task"])) != task_family(task.name):
    raise DataError(f"{path}: golds of task {doc['task']!r}, not {task.name}")
  out: dict[str, str] = {}
  seen: dict[str, str] = {}
  for i, g in enumerate(doc["golds"]):
    where, gid = record_with_id(g, f"{path}: gold {i}", seen, path, "gold")
    out[gid] = (gold_string(task, g.get("output"), where) if task
                else string_field(g, "output", where))
  return out


def gold_string(task, gold, where) -> str:
  if not isinstance(gold, str):
    raise DataError(f"{where}: gold output must be a string, got {type(gold).__name__}")
  if task.labels is not None and gold.strip() not in task.labels:
    raise DataError(f"{where}: gold {gold!r} is not a {task.name} label")
  return gold


def task_family(name: str) -> str:
  # Official files name LaMP_2N's and LaMP_2M's golds alike ("LaMP_2"), as we write them too;
  # compare the number.
  return re.sub(r"[^0-9]", "", name)


def read_json(path) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
  except UnicodeDecodeError as e:  # LaMP's files are UTF-8 JSON; name the byte, not a traceback
    raise DataError(f"{path}: not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset "
                    f"{e.start}") from None
  except OSError as e:
    raise DataError(f"{path}: cannot read: {e.strerror}") from None
