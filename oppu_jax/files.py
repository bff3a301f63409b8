"""Files that appear whole: the one rule for every output of a run. A path is written aside and
renamed into place, so a killed process leaves the old file (or directory) or the new one, never
half of it; hence "done" is simply "the path exists". Used by the pipeline's stages and by the
profile cache; orbax checkpoints and HF PEFT adapter directories follow the same rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

from oppu_jax import storage


def is_done(path: str) -> bool:
  """Whether a stage's output is there. Sound because outputs appear whole: through `output`,
  orbax (which renames a finished checkpoint into place) or hf_format (a finished directory)."""
  return os.path.exists(path)


@contextlib.contextmanager
def output(path: str):
  """Yields a temporary sibling of `path` to write (a file or a directory), renamed onto `path`
  when the block ends without error: a killed run leaves the old path or the new one, never half.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  _remove(tmp)  # a killed run's leftover
  try:
    yield tmp
    if os.path.isdir(tmp):
      _remove(path)  # os.replace cannot replace a directory that has files
    os.replace(tmp, path)
    storage.push(path)  # a workdir on an object store gets it too (storage.py)
  finally:
    _remove(tmp)


def write_json(path: str, doc) -> None:
  write_text(path, json.dumps(doc, indent=2, sort_keys=True))


def write_text(path: str, text: str) -> None:
  with output(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def _remove(path: str) -> None:
  if os.path.isdir(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)
