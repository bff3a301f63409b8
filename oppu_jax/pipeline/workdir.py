"""The run directory: the config it belongs to, the one run writing it; its outputs follow
`oppu_jax/files.py` (a result is done when its path exists, and every path appears whole:
written aside, then renamed).

Layout: config.json, run.lock (while a run holds the workdir), data/ (generated data, if no
path was given), checkpoints/task_<B|R|P> (orbax: the task-adaptation LoRA),
adapters/<setting>/<user_id>/ (HF PEFT format), profiles.json, predictions/<setting>.json,
results.json, results.md, analysis/<name>.{md,png,json}, report.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time

from oppu_jax import config as config_lib, storage
from oppu_jax.errors import WorkdirError
from oppu_jax.files import write_json

LOCK_NAME = "run.lock"
HEARTBEAT_SECONDS = 30.0  # the holder refreshes the lock's mtime this often
# A lock of another host (whose process cannot be asked) is stale when not refreshed this long.
STALE_SECONDS = 300.0

# Keys added after runs were made whose default is not what those runs did: their value then.
_BEFORE_THE_KEY = {"data.random_history": "own"}
# Keys that do not change results: a rerun may differ in them.
_NOT_FINGERPRINTED = ("overwrite", "progress", "distributed", "analysis", "storage",
                      "task_adapt.checkpoint_every")


def claim(workdir: str, config_dict: dict, overwrite: bool) -> None:
  """Creates the workdir for this config, or checks that it already belongs to it."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      theirs, mine = _flat(json.load(f)), _flat(config_dict)
    # A key added to the config since that run was made, at its value then, changes nothing.
    defaults = {**_flat(config_lib.get_config().to_dict()),
                **{k: json.dumps(v) for k, v in _BEFORE_THE_KEY.items()}}
    diff = sorted(k for k in theirs.keys() | mine.keys() if theirs.get(k) != mine.get(k)
                  and not (k not in theirs and mine.get(k) == defaults.get(k)))
    if diff and not finished_outputs(workdir):  # nothing made under the old config: no loss
      logging.info("%s: holds no finished stage; its config (differing in %s) is replaced",
                   workdir, ", ".join(diff[:5]))
    elif diff and not overwrite:
      raise WorkdirError(
          f"{workdir} holds a run with a different config (differs in {', '.join(diff[:5])});"
          " use another --workdir or pass --config.overwrite=True to replace it")
    elif diff:
      for name in os.listdir(workdir):  # all but the lock this run holds
        if name != LOCK_NAME:
          old = os.path.join(workdir, name)
          storage.remove(old)
          shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config_dict)


def finished_outputs(workdir: str) -> list[str]:
  """The names in `workdir` that a stage wrote (everything but the config, the lock and a killed
  write's leftovers)."""
  return sorted(n for n in os.listdir(workdir) if n != "config.json"
                and not n.startswith(LOCK_NAME) and not n.endswith(".tmp"))


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
  """{"train.epochs": "2", ...} without the keys that do not change results; through JSON, so
  tuples and lists (as a reloaded config has them) compare equal."""
  out = {}
  for k, v in d.items():
    if f"{prefix}{k}" in _NOT_FINGERPRINTED:
      continue
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
  return out


@contextlib.contextmanager
def lock(workdir: str, heartbeat: float = HEARTBEAT_SECONDS, stale_after: float = STALE_SECONDS):
  """Holds workdir/run.lock while the block runs: a second run on the workdir raises
  WorkdirError naming the holder; the lock of a dead run (its process gone, or, from another
  host, not refreshed for `stale_after` seconds) is taken over. Of a multi-process job only the
  first process takes it (the others write nothing the first does not coordinate)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  mine = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
  while not _create(path, mine):
    holder = _read(path)
    if holder is None and _age(path) < 5.0:  # being written by its new holder: look again
      time.sleep(0.1)
      continue
    if holder is not None and _alive(holder, path, stale_after):
      when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
      raise WorkdirError(f"{workdir} is in use by another run (pid {holder.get('pid')} on "
                         f"{holder.get('host')}, since {when}); wait for it to end or use "
                         f"another --workdir")
    try:  # rename, not delete: of two runs that both found it stale, one wins the rename
      os.rename(path, f"{path}.stale.{os.getpid()}")
    except FileNotFoundError:
      continue
    os.remove(f"{path}.stale.{os.getpid()}")
    logging.warning("%s: took over the lock of a run that is gone (%s)", workdir, holder)
  stop = threading.Event()
  beat = threading.Thread(target=_refresh, args=(path, heartbeat, stop), daemon=True)
  beat.start()
  try:
    yield
  finally:
    stop.set()
    beat.join()
    if _read(path) == mine:
      os.remove(path)


def _create(path: str, info: dict) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    json.dump(info, f)
  return True


def _read(path: str) -> dict | None:
  """The holder's record; None if the file is gone or half-written (a holder killed while
  writing it: stale)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, ValueError):
    return None


def _age(path: str) -> float:
  try:
    return time.time() - os.path.getmtime(path)
  except FileNotFoundError:
    return float("inf")


def _alive(holder: dict, path: str, stale_after: float) -> bool:
  if holder.get("host") == socket.gethostname():
    try:
      os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      return True  # someone else's live process
    return True
  return _age(path) < stale_after


def _refresh(path: str, every: float, stop: threading.Event) -> None:
  while not stop.wait(every):
    with contextlib.suppress(FileNotFoundError):
      os.utime(path)
