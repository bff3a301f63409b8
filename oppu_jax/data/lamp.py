"""Read LaMP data: the official release, OPPU's processed release, predictions.

The per-record checks are in `lamp_records`; writing these files is `lamp_write`.

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

from collections.abc import Sequence
import dataclasses
import logging
import os
from typing import Any

from oppu_jax.data import tasks as tasks_lib
from oppu_jax.data.lamp_records import (check_profile, check_texts_built, gold_string,
                                        pop_gold, read_golds, read_json, record_with_id,
                                        string_field, task_family, to_query)
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


def read_outputs(path: str) -> dict[str, str]:
  """{id: output} from a LaMP outputs / predictions file."""
  return read_golds(path, None)


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
    golds = read_golds(opath, task) if os.path.exists(opath) else None
    records = _question_records(read_json(qpath), qpath, task)
    if golds is None:  # LaMP's test split: its golds go to the leaderboard, not the release
      log.warning("%s: no %s_outputs.json: its %d queries are predicted, not scored", qpath,
                  split, len(records))
    for i, rec in enumerate(records):
      where, qid = record_with_id(rec, f"{qpath}: record {i}", seen_ids, qpath, "question")
      check_texts_built(task, rec, where)
      user_id = rec.get("user_id", qid)
      if not isinstance(user_id, (str, int)):
        raise DataError(f"{where}: field 'user_id' must be a string, got {type(user_id).__name__}")
      user_id = str(user_id)
      gold = None if golds is None else pop_gold(golds, qid, where, opath, "question")
      items = check_profile(task, rec.get("profile"), where)
      user = samples.setdefault(user_id, _Samples(qpath))
      user.profiles.append(items)
      user.times.append(_query_time(rec, items))
      user.queries.append(to_query(task, rec, gold, where, split))
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
    if "task" in doc and task_family(str(doc["task"])) != task_family(task.name):
      raise DataError(f"{qpath}: questions of task {doc['task']!r}, not {task.name}")
    return doc["golds"]
  if not isinstance(doc, list):
    raise DataError(f"{qpath}: expected a list of questions (or {{\"task\", \"golds\": "
                    f"[questions]}}), got {type(doc).__name__}")
  return doc


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
      golds = read_golds(lpath, task) if os.path.exists(lpath) else None
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
  records = read_json(upath)
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
    items = check_profile(task, rec.get("profile"), where)
    dedup: dict[str, dict[str, Any]] = {}
    for item in items:
      dedup.setdefault(item["id"], item)
    queries = []
    for j, q in enumerate(raw_queries):
      qwhere, qid = record_with_id(q, f"{where} query {j}", seen_queries, upath, "query")
      if golds is not None:
        gold = pop_gold(golds, qid, qwhere, OPPU_FILES["labels"], "query")
      else:
        gold = q.get("gold", q.get("output"))
        if gold is not None:
          gold = gold_string(task, gold, qwhere)
      queries.append(to_query(task, q, gold, qwhere, split))
    users.append(User(user_id, tuple(dedup.values()), tuple(queries)))
  return users


def _read_profiles(ppath, users) -> dict[str, str]:
  records = read_json(ppath)
  if not isinstance(records, list) or len(records) != len(users):
    n = len(records) if isinstance(records, list) else type(records).__name__
    raise DataError(f"{ppath}: expected a list of {len(users)} profiles aligned with the "
                    f"users, got {n}")
  out = {}
  for i, (rec, user) in enumerate(zip(records, users)):
    where = f"{ppath}: record {i}"
    if not isinstance(rec, dict):
      raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
    text = string_field(rec, "output", where)
    if "id" in rec and str(rec["id"]) != user.id:
      raise DataError(f"{where}: profile of user {rec['id']!r} where user {user.id!r} is expected")
    out[user.id] = text
  return out


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
