"""The in-memory model of a LaMP data set: users, their time-ordered histories, their queries.

Both released layouts (official `{split}_questions.json` + `{split}_outputs.json`, and OPPU's
processed `user_top_100_history.json` ...) load into these types. Pure Python: no JAX here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from oppu_jax.errors import DataError  # noqa: F401  (re-exported: `types.DataError` is the same)


@dataclasses.dataclass(frozen=True)
class Query:
  """One test (or dev) question of a user.

  `gold` is None where the golds are unknown (e.g. LaMP test split).
  `date` is the query's time where the release has one (used to cut retrievable history).
  `split` names the release's split it came from ("dev", "test", OPPU's "test" / "others").
  """

  id: str
  input: str
  gold: str | None = None
  date: str | None = None
  split: str | None = dataclasses.field(default=None, compare=False)  # provenance, not identity


@dataclasses.dataclass(frozen=True)
class User:
  """One user: the history items (LaMP "profile" items, dicts of task fields) in time order,
  oldest first, and the user's queries."""

  id: str
  history: tuple[dict[str, Any], ...]
  queries: tuple[Query, ...]


@dataclasses.dataclass(frozen=True)
class LampData:
  """A whole task's data: `users` in a stable order; `profiles` maps user id -> profile text
  (PAG) where one was loaded or generated."""

  task: str
  users: tuple[User, ...]
  profiles: dict[str, str] = dataclasses.field(default_factory=dict)

  def user(self, user_id: str) -> User:
    for u in self.users:
      if u.id == user_id:
        return u
    raise KeyError(user_id)


def date_key(value: Any) -> tuple[int, ...] | None:
  """A LaMP date as a tuple of ints, year first, to order and compare dates: '2009-08-31',
  '2009/08/31 12:00', '20090831' and 20090831 all give (2009, 8, 31, ...); '2009' gives (2009,).
  None when the value is absent or has no digits."""
  if value is None:
    return None
  parts = re.findall(r"\d+", str(value))
  if len(parts) == 1 and len(parts[0]) == 8:  # LaMP's compact "20111201": year, month, day.
    return (int(parts[0][:4]), int(parts[0][4:6]), int(parts[0][6:]))
  return tuple(int(p) for p in parts) if parts else None
