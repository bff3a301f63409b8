"""Read and write LaMP data: the official release, OPPU's processed release, predictions.

Layouts:
- "official": `{split}_questions.json` (records `id`, `input`, `profile`, optionally `user_id`
  and `date`; a list, or `{"task", "golds": [records]}` as LaMP's
  `data/avocado/create_avocado_dataset.py` writes LaMP_6's test questions) and, when the golds
  are public, `{split}_outputs.json`. LaMP_6 as released, with Avocado file ids where the
  emails go, is a DataError naming that script. A record without `user_id` is its own user,
  named by the record id. Records sharing a `user_id` (LaMP's
  time-based release: an integer, several samples per user, each with its own `profile` of the
  user's items before that sample, and no question-level `date`) are one user, whose one
  history serves all its queries (the adapter, retrieval and the PAG profile are shared), so it
  holds only what EVERY query of the user may see:
  * a query's time is its record's own `date`, else the latest `date` of its record's profile
    items when they all have one ("2009-08-31" and "20090831" read alike);
  * when every item and every query of the user has a time: the items (the union of its
    records' profiles, deduplicated by item id, the first copy kept) dated at or before the
    user's earliest query;
  * otherwise: the items present in every one of the user's records' profiles;
  * a user with a single record keeps that record's profile.
  The history is then ordered by `date` when every item has one. Each load logs (INFO) how many
  users came from how many records, which rule served how many users and how many items were
  dropped; a user left with no item is a DataError naming its user_id and file.
- "oppu": `user_top_100_history.json` (users `{"user_id"?, "profile", "query": [{"id",
  "input"}]}`), `user_top_100_history_label.json` (their golds, outputs shape),
  `user_others.json` (the other users, golds inline as `query[i]["gold"]`) and optionally
  `profile_user_100.json` / `profile_user_others.json` (profile texts aligned with the users of
  the top / others file). A user without `user_id`
  is named by its first query id. Splits: "test" (the top file), "others". LaMP_1's items
  there carry `citation` too (a task's `optional_fields`: strings where present).

Every malformed input raises DataError with one line naming the file and the record. History
fields longer than `max_words` words are cut to their first `max_words` words (the reference
does the same at 768), and each file's count of cuts is logged — never silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import json
import logging
import math
import os
import re
from typing import Any

from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.types import LampData, Query, User, date_key
from oppu_jax.errors import DataError

log = logging.getLogger(__name__)

OPPU_FILES = {
    "test": "user_top_100_history.json",
    "labels": "user_top_100_history_label.json",
    "others": "user_others.json",
    "profiles": "profile_user_100.json",
    "other_profiles": "profile_user_others.json",
}
SPLIT_ORDER = ("train", "dev", "test")
MAX_WORDS = 768


def load(
    path: str,
    task: str | tasks_lib.Task,
    format: str = "auto",  # pylint: disable=redefined-builtin
    split: str | Sequence[str] | None = None,
    max_words: int | None = MAX_WORDS,
) -> LampData:
  """Loads a LaMP directory in either layout; `split=None` takes every split present."""
  task = tasks_lib.get_task(task) if isinstance(task, str) else task
  if not os.path.isdir(path):
    raise DataError(f"{path}: not a directory")
  fmt = detect_format(path) if format == "auto" else format
  splits = [split] if isinstance(split, str) else split
  if fmt == "official":
    return _load_official(path, task, splits, max_words)
  if fmt == "oppu":
    return _load_oppu(path, task, splits, max_words)
  raise DataError(f"unknown LaMP layout {format!r}; expected 'auto', 'official' or 'oppu'")


def detect_format(path: str) -> str:
  """"official" or "oppu", from the file names in the directory `path`."""
  if not os.path.isdir(path):
    raise DataError(f"{path}: not a directory")
  names = set(os.listdir(path))
  if OPPU_FILES["test"] in names or OPPU_FILES["others"] in names:
    return "oppu"
  if any(n.endswith("_questions.json") for n in names):
    return "official"
  raise DataError(
      f"{path}: neither LaMP layout; expected {{split}}_questions.json (+ {{split}}_outputs.json)"
      f" or {OPPU_FILES['test']} / {OPPU_FILES['others']}; found {sorted(names)[:10]}")


def select_users(data: LampData, n: int, how: str = "most_active") -> tuple[LampData, LampData]:
  """(the n test users, all the others in their original order) — the paper's test users and
  base-adaptation users. how "most_active": the n users with the longest histories, longest
  first, ties by id (OPPU's protocol); "spread": n users with a query, evenly spaced over the
  history-length ranking, longest first (activity analyses need short and long histories).
  n <= 0: every user with a query (the PEFT-vs-RAG study's "one adapter per user present in the
  test set")."""
  ranked = sorted(data.users, key=lambda u: (-len(u.history), u.id))
  if n <= 0:
    ranked = [u for u in ranked if u.queries]
    n = len(ranked)
  if how == "spread":
    ranked = [u for u in ranked if u.queries]
    if n < len(ranked):
      picks = sorted({round(i * (len(ranked) - 1) / max(n - 1, 1)) for i in range(n)})
      ranked = [ranked[i] for i in picks]
  elif how != "most_active":
    raise ValueError(f"select_users: unknown how={how!r}")
  chosen = {u.id for u in ranked[:n]}
  test = tuple(ranked[:n])
  others = tuple(u for u in data.users if u.id not in chosen)
  return (_subset(data, test), _subset(data, others))


def truncate_words(text: str, max_words: int) -> str:
  """The first `max_words` whitespace words of `text` (unchanged when it is shorter)."""
  words = text.split()
  return text if len(words) <= max_words else " ".join(words[:max_words])


def write_predictions(path: str, task: str | tasks_lib.Task, outputs: Mapping[str, str]) -> None:
  """Writes {id: output} in the LaMP outputs shape ({"task", "golds": [{"id", "output"}]}),
  named as LaMP's evaluator knows the task: LaMP_2N and LaMP_2M are both "LaMP_2"."""
  name = task if isinstance(task, str) else task.name
  _write_json(path, _outputs_doc(name, outputs.items()))


def read_outputs(path: str) -> dict[str, str]:
  """{id: output} from a LaMP outputs / predictions file."""
  return _read_golds(path, None)


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


# --- official layout ---------------------------------------------------------------------------


def _load_official(path, task, splits, max_words) -> LampData:
  present = [n[: -len("_questions.json")] for n in os.listdir(path)
             if n.endswith("_questions.json")]
  present.sort(key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))
  if not present:
    raise DataError(f"{path}: no {{split}}_questions.json files (the official LaMP layout)")
  for s in splits or ():
    if s not in present:
      raise DataError(f"{path}: no {s}_questions.json (splits present: {', '.join(present)})")
  samples: dict[str, _Samples] = {}
  seen_ids: dict[str, str] = {}
  cuts = _Cuts(max_words)
  for split in splits or present:
    qpath = os.path.join(path, f"{split}_questions.json")
    opath = os.path.join(path, f"{split}_outputs.json")
    golds = _read_golds(opath, task) if os.path.exists(opath) else None
    records = _question_records(_read_json(qpath), qpath, task)
    if golds is None:  # LaMP's test split: its golds go to the leaderboard, not the release
      log.warning("%s: no %s_outputs.json: its %d queries are predicted, not scored", qpath,
                  split, len(records))
    for i, rec in enumerate(records):
      where, qid = _record_with_id(rec, f"{qpath}: record {i}", seen_ids, qpath, "question")
      _check_texts_built(task, rec, where)
      user_id = rec.get("user_id", qid)
      if not isinstance(user_id, (str, int)):
        raise DataError(f"{where}: field 'user_id' must be a string, got {type(user_id).__name__}")
      user_id = str(user_id)
      gold = None if golds is None else _pop_gold(golds, qid, where, opath, "question")
      items = _check_profile(task, rec.get("profile"), where)
      user = samples.setdefault(user_id, _Samples(qpath))
      user.profiles.append(items)
      user.times.append(_query_time(rec, items))
      user.queries.append(_query(task, rec, gold, where, split))
    if golds:
      first = next(iter(golds))
      raise DataError(f"{opath}: gold id {first!r} has no question in {qpath} "
                      f"({len(golds)} such golds)")
  users = []
  rules: dict[str, int] = {rule: 0 for rule in _RULES}
  dropped = 0
  for user_id, user in samples.items():
    history, rule, n_dropped = _shared_history(user)
    if not history:
      raise DataError(f"{user.source}: user_id {user_id!r}: no profile item is visible to all "
                      f"{len(user.queries)} of its queries ({rule} rule)")
    rules[rule] += 1
    dropped += n_dropped
    history = _time_order(history)
    users.append(User(user_id, tuple(cuts.apply(history)), tuple(user.queries)))
  log.info("%s: %d users from %d records; history rule per user: %s; %d profile items dropped "
           "(not visible to every query of their user)", path, len(users),
           sum(len(u.queries) for u in samples.values()),
           ", ".join(f"{rule} {n}" for rule, n in rules.items()), dropped)
  cuts.report(path)
  return LampData(task.name, tuple(users))


_RULES = ("dates", "intersection", "single record")


def _question_records(doc: Any, qpath: str, task) -> list[Any]:
  # LaMP's data/avocado/create_avocado_dataset.py writes LaMP_6's test questions in the outputs
  # shape, {"task": "LaMP_6", "golds": [questions]}; any task's questions may come so.
  if isinstance(doc, dict) and isinstance(doc.get("golds"), list):
    if "task" in doc and _family(str(doc["task"])) != _family(task.name):
      raise DataError(f"{qpath}: questions of task {doc['task']!r}, not {task.name}")
    return doc["golds"]
  if not isinstance(doc, list):
    raise DataError(f"{qpath}: expected a list of questions (or {{\"task\", \"golds\": "
                    f"[questions]}}), got {type(doc).__name__}")
  return doc


def _check_texts_built(task, rec: dict[str, Any], where: str) -> None:
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


@dataclasses.dataclass
class _Samples:
  """One user's records as read: each record's profile, query time and query."""

  source: str  # the file of the user's first record, to name in errors
  profiles: list[list[dict[str, Any]]] = dataclasses.field(default_factory=list)
  times: list[tuple[int, ...] | None] = dataclasses.field(default_factory=list)
  queries: list[Query] = dataclasses.field(default_factory=list)


def _shared_history(user: _Samples) -> tuple[list[dict[str, Any]], str, int]:
  """(the items every query of the user may see, the rule that chose them, how many of the
  union of its profiles were dropped)."""
  union: dict[str, dict[str, Any]] = {}
  for items in user.profiles:
    for item in items:
      union.setdefault(item["id"], item)  # The same item recurs in a user's samples.
  if len(user.profiles) == 1:
    return list(union.values()), "single record", 0
  item_times = {i: date_key(item.get("date")) for i, item in union.items()}
  if all(t is not None for t in [*user.times, *item_times.values()]):
    earliest = min(user.times)
    kept = [item for i, item in union.items() if _at_or_before(item_times[i], earliest)]
    return kept, "dates", len(union) - len(kept)
  common = set.intersection(*({item["id"] for item in items} for items in user.profiles))
  kept = [item for i, item in union.items() if i in common]
  return kept, "intersection", len(union) - len(kept)


def _query_time(rec: dict[str, Any], items: list[dict[str, Any]]) -> tuple[int, ...] | None:
  """The record's own date, else the latest of its profile items' dates (all must have one)."""
  own = date_key(rec.get("date"))
  if own is not None:
    return own
  keys = [date_key(item.get("date")) for item in items]
  return max(keys) if keys and all(k is not None for k in keys) else None


def _at_or_before(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
  # Mixed granularity ("2011" against "2011-09-01") compares the common prefix.
  n = min(len(a), len(b))
  return a[:n] <= b[:n]


def _query(task, rec, gold, where, split) -> Query:
  text = _string(rec, "input", where)
  try:
    tasks_lib.parse_input(task, text)
  except DataError as e:
    raise DataError(f"{where}: {e}") from None
  date = rec.get("date")
  return Query(rec["id"], text, gold, None if date is None else str(date), split)


def _time_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
  keys = [date_key(it.get("date")) for it in items]
  if all(k is not None for k in keys):
    order = sorted(range(len(items)), key=lambda i: keys[i])  # Stable: equal dates keep order.
    return [items[i] for i in order]
  return items


# --- OPPU's processed layout -------------------------------------------------------------------


def _load_oppu(path, task, splits, max_words) -> LampData:
  for s in splits or ():
    if s not in ("test", "others"):
      raise DataError(f"{path}: OPPU layout splits are 'test' and 'others', not {s!r}")
  cuts = _Cuts(max_words)
  users: list[User] = []
  profiles: dict[str, str] = {}
  seen_users: dict[str, str] = {}
  seen_queries: dict[str, str] = {}
  for split in splits or ("test", "others"):
    upath = os.path.join(path, OPPU_FILES[split])
    if not os.path.exists(upath):
      if splits:
        raise DataError(f"{upath}: missing (the OPPU layout's {split} users)")
      continue
    golds = None
    if split == "test":
      lpath = os.path.join(path, OPPU_FILES["labels"])
      golds = _read_golds(lpath, task) if os.path.exists(lpath) else None
      if golds is None:
        log.warning("%s: no %s: its users' queries are predicted, not scored", upath,
                    OPPU_FILES["labels"])
    part = _read_oppu_users(upath, task, golds, seen_users, seen_queries, split)
    if golds:
      first = next(iter(golds))
      raise DataError(f"{lpath}: gold id {first!r} has no query in {upath} "
                      f"({len(golds)} such golds)")
    part = [User(u.id, tuple(cuts.apply(list(u.history))), u.queries) for u in part]
    cuts.report(upath)
    ppath = os.path.join(path, OPPU_FILES["profiles" if split == "test" else "other_profiles"])
    if os.path.exists(ppath):
      profiles.update(_read_profiles(ppath, part))
    users.extend(part)
  if not users:
    raise DataError(f"{path}: no users ({OPPU_FILES['test']} / {OPPU_FILES['others']} missing)")
  return LampData(task.name, tuple(users), profiles)


def _read_oppu_users(upath, task, golds, seen_users, seen_queries, split) -> list[User]:
  records = _read_json(upath)
  if not isinstance(records, list):
    raise DataError(f"{upath}: expected a list of users, got {type(records).__name__}")
  users = []
  for i, rec in enumerate(records):
    where = f"{upath}: user {i}"
    if not isinstance(rec, dict):
      raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
    raw_queries = rec.get("query")
    if not isinstance(raw_queries, list):
      raise DataError(f"{where}: missing field 'query' (a list of {{id, input}})")
    user_id = rec.get("user_id")
    if user_id is None:
      if not raw_queries or not isinstance(raw_queries[0], dict) or "id" not in raw_queries[0]:
        raise DataError(f"{where}: no 'user_id' and no query id to name the user by")
      user_id = raw_queries[0]["id"]
    user_id = str(user_id)
    where = f"{where} (user_id {user_id!r})"
    if user_id in seen_users:
      raise DataError(f"{where}: duplicate user id (also in {seen_users[user_id]})")
    seen_users[user_id] = upath
    items = _check_profile(task, rec.get("profile"), where)
    dedup: dict[str, dict[str, Any]] = {}
    for item in items:
      dedup.setdefault(item["id"], item)
    queries = []
    for j, q in enumerate(raw_queries):
      qwhere, qid = _record_with_id(q, f"{where} query {j}", seen_queries, upath, "query")
      if golds is not None:
        gold = _pop_gold(golds, qid, qwhere, OPPU_FILES["labels"], "query")
      else:
        gold = q.get("gold", q.get("output"))
        if gold is not None:
          gold = _gold_string(task, gold, qwhere)
      queries.append(_query(task, q, gold, qwhere, split))
    users.append(User(user_id, tuple(dedup.values()), tuple(queries)))
  return users


def _record_with_id(rec, where: str, seen: dict[str, str], source: str, kind: str):
  """A question, query or gold record: an object with a string id not seen before.

  Returns (`where` naming the id, the id); records the id as coming from `source`.
  """
  if not isinstance(rec, dict):
    raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
  where = f"{where} (id {rec.get('id')!r})"
  qid = _string(rec, "id", where)
  if qid in seen:
    raise DataError(f"{where}: duplicate {kind} id (also in {seen[qid]})")
  seen[qid] = source
  return where, qid


def _pop_gold(golds: dict, qid: str, where: str, gold_file: str, kind: str):
  if qid not in golds:
    raise DataError(f"{where}: {kind} has no gold in {gold_file}")
  return golds.pop(qid)


def _read_profiles(ppath, users) -> dict[str, str]:
  records = _read_json(ppath)
  if not isinstance(records, list) or len(records) != len(users):
    n = len(records) if isinstance(records, list) else type(records).__name__
    raise DataError(f"{ppath}: expected a list of {len(users)} profiles aligned with the "
                    f"users, got {n}")
  out = {}
  for i, (rec, user) in enumerate(zip(records, users)):
    where = f"{ppath}: record {i}"
    if not isinstance(rec, dict):
      raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
    text = _string(rec, "output", where)
    if "id" in rec and str(rec["id"]) != user.id:
      raise DataError(f"{where}: profile of user {rec['id']!r} where user {user.id!r} is expected")
    out[user.id] = text
  return out


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


# --- shared checks ------------------------------------------------------------------------------


def _check_profile(task, profile, where) -> list[dict[str, Any]]:
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
    _string(item, f, where)
  if "date" in item and not isinstance(item["date"], (str, int)):
    raise DataError(f"{where}: field 'date' must be a string, got {type(item['date']).__name__}")
  return item


def _guess_task(item) -> str:
  fits = [t for t in tasks_lib.TASKS.values() if set(t.item_fields) <= set(item)]
  if not fits:
    return ""
  most = max(len(t.item_fields) for t in fits)
  return "/".join(t.name for t in fits if len(t.item_fields) == most)


def _string(rec, field, where) -> str:
  if field not in rec:
    raise DataError(f"{where}: missing field {field!r}")
  if not isinstance(rec[field], str):
    raise DataError(f"{where}: field {field!r} must be a string, got {type(rec[field]).__name__}")
  return rec[field]


def _read_golds(path, task) -> dict[str, str]:
  doc = _read_json(path)
  if not isinstance(doc, dict) or not isinstance(doc.get("golds"), list):
    raise DataError(f"{path}: expected {{\"task\": ..., \"golds\": [{{\"id\", \"output\"}}]}}")
  if task is not None and "task" in doc and _family(str(doc["task"])) != _family(task.name):
    raise DataError(f"{path}: golds of task {doc['task']!r}, not {task.name}")
  out: dict[str, str] = {}
  seen: dict[str, str] = {}
  for i, g in enumerate(doc["golds"]):
    where, gid = _record_with_id(g, f"{path}: gold {i}", seen, path, "gold")
    out[gid] = _gold_string(task, g.get("output"), where) if task else _string(g, "output", where)
  return out


def _gold_string(task, gold, where) -> str:
  if not isinstance(gold, str):
    raise DataError(f"{where}: gold output must be a string, got {type(gold).__name__}")
  if task.labels is not None and gold.strip() not in task.labels:
    raise DataError(f"{where}: gold {gold!r} is not a {task.name} label")
  return gold


def _family(name: str) -> str:
  # Official files name LaMP_2N's and LaMP_2M's golds alike ("LaMP_2"), as we write them too;
  # compare the number.
  return re.sub(r"[^0-9]", "", name)


def _read_json(path) -> Any:
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


def _write_json(path, doc) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)


def _outputs_doc(task_name: str, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
  # LaMP's evaluator knows LaMP_1 .. LaMP_7 only, and matches predictions to golds by this name.
  name = f"LaMP_{_family(tasks_lib.get_task(task_name).name)}"
  return {"task": name, "golds": [{"id": i, "output": o} for i, o in pairs]}


def _all_or_none(golds, queries, out_dir) -> bool:
  # A golds file must cover every question of its split, or the loader rejects it.
  if golds and len(golds) != len(queries):
    raise DataError(f"{out_dir}: {len(queries) - len(golds)} of {len(queries)} queries lack "
                    "golds; a split has golds for all its queries or for none")
  return bool(golds)


def _subset(data: LampData, users: tuple[User, ...]) -> LampData:
  ids = {u.id for u in users}
  return LampData(data.task, users, {k: v for k, v in data.profiles.items() if k in ids})


class _Cuts:
  """Cuts history fields to a word budget and counts what it cut, to log it."""

  def __init__(self, max_words: int | None):
    self.max_words = max_words
    self.fields = 0
    self.items: list[str] = []

  def apply(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if self.max_words is None:
      return history
    out = []
    for item in history:
      cut = {k: truncate_words(v, self.max_words)
             if isinstance(v, str) and k not in ("id", "date") else v for k, v in item.items()}
      n = sum(cut[k] != item[k] for k in item)
      if n:
        self.fields += n
        self.items.append(str(item.get("id")))
        log.debug("cut %d field(s) of history item %s to %d words", n, item.get("id"),
                  self.max_words)
      out.append(cut)
    return out

  def report(self, source: str) -> None:
    if self.fields:
      log.warning("%s: cut %d history field(s) in %d item(s) (first: id %s) to their first %d "
                  "words", source, self.fields, len(self.items), self.items[0], self.max_words)
    self.fields, self.items = 0, []
