"""The run directory: the config it belongs to; its outputs follow `oppu_jax/files.py` (a result
is done when its path exists, and every path appears whole: written aside, then renamed).

Layout: config.json, data/ (generated data, if no path was given), checkpoints/task_<B|R|P>
(orbax: the task-adaptation LoRA), adapters/<setting>/<user_id>/ (HF PEFT format),
profiles.json, predictions/<setting>.json, results.json, results.md.
"""

from __future__ import annotations

import json
import os
import shutil

from oppu_jax import config as config_lib
from oppu_jax.errors import WorkdirError
from oppu_jax.files import write_json

# Keys that do not change results: a rerun may differ in them.
_NOT_FINGERPRINTED = ("overwrite", "progress", "distributed", "analysis")


def claim(workdir: str, config_dict: dict, overwrite: bool) -> None:
  """Creates the workdir for this config, or checks that it already belongs to it."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      theirs, mine = _flat(json.load(f)), _flat(config_dict)
    # A key added to the config since that run was made, at its default, changes nothing.
    defaults = _flat(config_lib.get_config().to_dict())
    diff = sorted(k for k in theirs.keys() | mine.keys() if theirs.get(k) != mine.get(k)
                  and not (k not in theirs and mine.get(k) == defaults.get(k)))
    if diff and not overwrite:
      raise WorkdirError(
          f"{workdir} holds a run with a different config (differs in {', '.join(diff[:5])});"
          " use another --workdir or pass --config.overwrite=True to replace it")
    if diff:
      shutil.rmtree(workdir)
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config_dict)


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
