"""The run directory: the config it belongs to, and the one rule for outputs: a result is done
when its path exists, and every path appears whole (written aside, then renamed).

Layout: config.json, data/ (generated data, if no path was given), checkpoints/task_<B|R|P>
(orbax: the task-adaptation LoRA), adapters/<setting>/<user_id>/ (HF PEFT format),
profiles.json, predictions/<setting>.json, results.json, results.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

from oppu_jax.errors import WorkdirError

# Keys that do not change results: a rerun may differ in them.
_NOT_FINGERPRINTED = ("overwrite", "progress", "distributed")


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
  finally:
    _remove(tmp)


def write_json(path: str, doc) -> None:
  write_text(path, json.dumps(doc, indent=2, sort_keys=True))


def write_text(path: str, text: str) -> None:
  with output(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def claim(workdir: str, config_dict: dict, overwrite: bool) -> None:
  """Creates the workdir for this config, or checks that it already belongs to it."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      theirs, mine = _flat(json.load(f)), _flat(config_dict)
    diff = sorted(k for k in theirs.keys() | mine.keys() if theirs.get(k) != mine.get(k))
    if diff and not overwrite:
      raise WorkdirError(
          f"{workdir} holds a run with a different config (differs in {', '.join(diff[:5])});"
          " use another --workdir or pass --config.overwrite=True to replace it")
    if diff:
      shutil.rmtree(workdir)
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config_dict)


def _remove(path: str) -> None:
  if os.path.isdir(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
  """{"train.epochs": "2", ...} without the keys that do not change results; through JSON, so
  tuples and lists (as a reloaded config has them) compare equal."""
  out = {}
  for k, v in d.items():
    if not prefix and k in _NOT_FINGERPRINTED:
      continue
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
  return out
