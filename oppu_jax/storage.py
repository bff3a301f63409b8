"""Workdirs, data and models on object stores (gs://..., any etils `epath` scheme; `file://` is the
local filesystem addressed as a store, which is how the tests run this code).

An object store has no atomic rename of directories and no O_EXCL files, and orbax, safetensors and
the LaMP readers want local paths. So a run on a remote workdir works in a local mirror:
- `attach` maps the workdir to a local directory (per process) and `pull`s what the store holds;
- every finished output is `push`ed: its files uploaded, then a marker object `<path>.complete`
  (an object upload is atomic; the marker, written last, says the whole output is there);
- `pull` brings down exactly the outputs that have a marker, so a push cut short by a crash is
  not mistaken for a finished output; it runs at the start and after every barrier of a
  multi-process run, which is how one process sees another's adapters and part files;
- `remove` deletes an output there too (marker first).
Local workdirs are untouched by all of this (every function returns at once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil

from etils import epath

MARK = ".complete"
_mirrors: dict[str, epath.Path] = {}  # local mirror root -> the store's root


def is_remote(path: str) -> bool:
  return "://" in str(path)


def _store(url: str) -> epath.Path:
  return epath.Path(url[len("file://"):]) if url.startswith("file://") else epath.Path(url)


def attach(workdir: str, cache: str, process: int = 0) -> str:
  """The local directory the run works in: `workdir` itself, or for a store URL its mirror under
  `cache` (filled with what the store holds)."""
  if not is_remote(workdir):
    return workdir
  key = hashlib.sha1(workdir.encode()).hexdigest()[:12]
  local = os.path.abspath(os.path.join(cache, f"workdir-{key}", f"process{process}"))
  os.makedirs(local, exist_ok=True)
  _mirrors[local] = _store(workdir)
  logging.info("workdir %s: working in the local mirror %s", workdir, local)
  pull()
  return local


def detach(local: str) -> None:
  """Stops mirroring `local` (the end of its run): later pushes and pulls leave its store alone,
  so one process can run several workdirs one after the other."""
  _mirrors.pop(local, None)


def pull() -> None:
  """Downloads every finished output (one with a marker) the mirrors lack."""
  for local, store in _mirrors.items():
    if not store.exists():
      continue
    for folder, _, names in store.walk():
      for name in names:
        if not name.endswith(MARK):
          continue
        source = epath.Path(folder) / name[:-len(MARK)]
        dest = os.path.join(local, os.path.relpath(str(source), str(store)))
        if not os.path.lexists(dest) and source.exists():
          _download(source, dest)


def push(path: str) -> None:
  """Uploads the finished output at local `path` (a file or a directory) if it lies in a mirror."""
  target = _counterpart(path)
  # Something written inside an output still being made (files.output's "<path>.tmp") goes up
  # with that output, not alone.
  if target is None or any(part.endswith(".tmp") for part in path.split(os.sep)):
    return
  if os.path.isdir(path):
    for folder, _, names in os.walk(path):
      for name in names:
        local = os.path.join(folder, name)
        _copy(local, target / os.path.relpath(local, path))
  else:
    _copy(path, target)
  (target.parent / (target.name + MARK)).write_text("")


def remove(path: str) -> None:
  """Deletes the store's copy of local `path` (its marker first: never a half-present output)."""
  target = _counterpart(path)
  if target is None:
    return
  marker = target.parent / (target.name + MARK)
  if marker.exists():
    marker.unlink()
  if target.is_dir():
    target.rmtree()
  elif target.exists():
    target.unlink()


def local_copy(path: str, cache: str) -> str:
  """An input (data directory, model checkpoint) as a local path: a store URL is downloaded once
  into `cache` (whole, then renamed into place)."""
  if not path or not is_remote(path):
    return path
  key = hashlib.sha1(path.encode()).hexdigest()[:12]
  dest = os.path.abspath(os.path.join(cache, f"input-{key}"))
  if not os.path.exists(dest):
    source = _store(path)
    if not source.exists():
      from oppu_jax.errors import DataError

      raise DataError(f"{path} does not exist")
    _download(source, dest)
  return dest


def _counterpart(path: str) -> epath.Path | None:
  path = os.path.abspath(path)
  for local, store in _mirrors.items():
    if path == local or path.startswith(local + os.sep):
      return store / os.path.relpath(path, local)
  return None


def _copy(local: str, target: epath.Path) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  with open(local, "rb") as src, target.open("wb") as dst:
    shutil.copyfileobj(src, dst)


def _download(source: epath.Path, dest: str) -> None:
  """source (file or tree) -> dest, written aside and renamed into place."""
  tmp = f"{dest}.pull{os.getpid()}"  # processes of one host may fetch the same input at once
  shutil.rmtree(tmp, ignore_errors=True)
  if source.is_dir():
    for folder, _, names in source.walk():
      for name in names:
        item = epath.Path(folder) / name
        _fetch(item, os.path.join(tmp, os.path.relpath(str(item), str(source))))
  else:
    _fetch(source, tmp)
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  try:
    os.replace(tmp, dest)
  except OSError:  # another process put the same input there first
    if not os.path.exists(dest):
      raise
    shutil.rmtree(tmp, ignore_errors=True)


def _fetch(item: epath.Path, dest: str) -> None:
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  with item.open("rb") as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst)
