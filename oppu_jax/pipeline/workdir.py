"""The run directory: the config it belongs to, atomic writes, and what is already done.

Layout: config.json, data/ (generated data, if no path was given), checkpoints/task_<B|R|P>
(orbax: the task-adaptation LoRA), adapters/<setting>/<user_id>/ (HF PEFT format),
profiles.json, predictions/<setting>.json, results.json, results.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

# Keys that do not change results: a rerun may differ in them.
_NOT_FINGERPRINTED = ("overwrite", "progress", "distributed")


class WorkdirError(ValueError):
  """The workdir holds another run; the message is one line."""


def claim(workdir: str, config_dict: dict, overwrite: bool) -> None:
  """Creates the workdir for this config, or checks that it already belongs to it."""
  path = os.path.join(workdir, "config.json")
  mine = _fingerprint(config_dict)
  if os.path.exists(path):
    with open(path) as f:
      theirs = _fingerprint(json.load(f))
    if theirs != mine:
      if not overwrite:
        diff = sorted(k for k in set(_flat(mine)) | set(_flat(theirs))
                      if _flat(mine).get(k) != _flat(theirs).get(k))
        raise WorkdirError(
            f"{workdir} holds a run with a different config (differs in {', '.join(diff[:5])});"
            " use another --workdir or pass --config.overwrite=True to replace it")
      shutil.rmtree(workdir)
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config_dict)


def write_json(path: str, doc) -> None:
  """Writes JSON atomically: a killed process leaves the old file or the new one, never half."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    json.dump(doc, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _fingerprint(config_dict: dict) -> dict:
  # Through JSON, so tuples and lists (as a reloaded config has them) compare equal.
  return json.loads(json.dumps(
      {k: v for k, v in config_dict.items() if k not in _NOT_FINGERPRINTED}, sort_keys=True))


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
  return out
