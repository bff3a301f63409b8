"""A `tensorflow_datasets` builder for the official LaMP release, usable without TensorFlow.

Prepared as array_record and read back with `tfds.data_source` / `as_data_source()`, the parts
of TFDS that need no TensorFlow. Needs the `tfds` extra (`pip install 'oppu-jax[tfds]'`);
importing this module does not import TFDS.

    builder = tfds_lamp.prepare("LaMP_3", manual_dir="~/lamp", data_dir="~/tfds")
    source = builder.as_data_source()          # {"train": ..., "dev": ..., "test": ...}
    record = tfds_lamp.decode_record(source["dev"][0])

Manual directory: `{split}_questions.json` and `{split}_outputs.json` for split in train, dev,
test, either in `manual_dir/<task>/` (checked first) or directly in `manual_dir`. A split whose
outputs file is absent (the official test split) gets output "". Records keep the questions'
file order. Each record: id, input, output, user_id ("" in the user-based release) — strings —
and profile, the JSON text of the question's profile list: lossless whatever the task's item
fields and value types, which a fixed `Sequence` of typed features would not be.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from oppu_jax.data import tasks as tasks_lib
from oppu_jax.errors import DataError

SPLITS = ("train", "dev", "test")
NAME = "lamp"  # the TFDS dataset name: tfds.data_source("lamp/LaMP_3", data_dir=...)


def prepare(task: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike):
  """Builds (once; later calls reuse it) the array_record dataset of `task`; the builder."""
  tfds = _tfds()
  b = _builder(task, data_dir)
  b.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir)))
  return b


def _builder(task: str, data_dir: str | os.PathLike):
  """The LaMP builder for `task` (a key of `tasks.TASKS`) writing array_record to data_dir."""
  if task not in tasks_lib.TASKS:  # exact names: each is a builder config; get_task's aliases not
    raise DataError(f"unknown LaMP task {task!r}; expected one of {', '.join(tasks_lib.TASKS)}")
  return builder_class()(config=task, data_dir=os.path.expanduser(data_dir),
                         file_format="array_record")


def decode_record(record: dict[str, Any]) -> dict[str, Any]:
  """A read-back record with str fields and the profile parsed back into a list of dicts."""
  out = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in record.items()}
  out["profile"] = json.loads(out["profile"])
  return out


@functools.cache
def builder_class():
  """The GeneratorBasedBuilder subclass, defined once (TFDS registers it under NAME)."""
  tfds = _tfds()

  class Lamp(tfds.core.GeneratorBasedBuilder):
    """LaMP: the Language Model Personalization benchmark (official release, manual files)."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Official LaMP files; profile as JSON text."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=t, description=f"LaMP task {t}")
                       for t in tasks_lib.TASKS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the LaMP task files from https://lamp-benchmark.github.io/download and put "
        "{split}_questions.json / {split}_outputs.json in <manual_dir>/<task>/ or <manual_dir>/.")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      # TFDS looks next to the code for a checksums file (manual data has none), and that lookup
      # imports `importlib_resources`, which TFDS does not declare on Python >= 3.9.
      return None

    def _info(self):
      text = tfds.features.Text()
      return tfds.core.DatasetInfo(
          builder=self,
          description="LaMP personalization benchmark; profile is a JSON list of items.",
          features=tfds.features.FeaturesDict(
              {"id": text, "input": text, "output": text, "user_id": text, "profile": text}),
          homepage="https://lamp-benchmark.github.io/",
          disable_shuffling=True,  # keep the questions' file order
      )

    def _split_generators(self, dl_manager):
      root = os.fspath(dl_manager.manual_dir)
      task_dir = os.path.join(root, self.builder_config.name)
      root = task_dir if os.path.isdir(task_dir) else root
      present = [s for s in SPLITS
                 if os.path.exists(os.path.join(root, f"{s}_questions.json"))]
      if not present:
        raise DataError(f"{root}: no {{train,dev,test}}_questions.json for "
                        f"{self.builder_config.name}")
      return {s: self._generate_examples(root, s) for s in present}

    def _generate_examples(self, root, split):
      # A list, not a generator: every file is validated before anything is written.
      return _examples(root, split)

  return Lamp


def _examples(root: str, split: str):
  """(key, record) pairs of one split, validated: one DataError line per problem."""
  q_path = os.path.join(root, f"{split}_questions.json")
  o_path = os.path.join(root, f"{split}_outputs.json")
  questions = _load_json(q_path)
  if not isinstance(questions, list):
    raise DataError(f"{q_path}: expected a list of questions, got {type(questions).__name__}")
  golds = None
  if os.path.exists(o_path):
    outputs = _load_json(o_path)
    if not isinstance(outputs, dict) or not isinstance(outputs.get("golds"), list):
      raise DataError(f"{o_path}: expected {{'task': ..., 'golds': [...]}}")
    golds = {}
    for i, g in enumerate(outputs["golds"]):
      if not isinstance(g, dict) or "id" not in g or "output" not in g:
        raise DataError(f"{o_path}: gold {i} needs 'id' and 'output'")
      golds[str(g["id"])] = str(g["output"])
  seen = set()
  records = []
  for i, q in enumerate(questions):
    for field in ("id", "input", "profile"):
      if not isinstance(q, dict) or field not in q:
        raise DataError(f"{q_path}: question {i} has no field {field!r}")
    qid = str(q["id"])
    if qid in seen:
      raise DataError(f"{q_path}: duplicate question id {qid!r}")
    seen.add(qid)
    if not isinstance(q["profile"], list):
      raise DataError(f"{q_path}: question {qid!r}: profile is not a list")
    if golds is not None and qid not in golds:
      raise DataError(f"{o_path}: no gold for question id {qid!r}")
    records.append((qid, {
        "id": qid,
        "input": str(q["input"]),
        "output": golds[qid] if golds is not None else "",
        "user_id": str(q.get("user_id", "")),
        "profile": json.dumps(q["profile"], ensure_ascii=False),
    }))
  if golds is not None and len(golds) != len(seen):
    extra = next(g for g in golds if g not in seen)
    raise DataError(f"{o_path}: gold id {extra!r} has no question in {q_path}")
  return records


def _load_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: invalid JSON ({e})") from None


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("oppu_jax.data.tfds_lamp needs tensorflow-datasets and array-record: "
                      "pip install 'oppu-jax[tfds]'") from None
  return tfds
