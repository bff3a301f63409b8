"""What the analysis tests compute by hand from a workdir's files."""

import json
import os


def read(workdir: str, name: str) -> dict:
  with open(os.path.join(workdir, "analysis", f"{name}.json")) as f:
    return json.load(f)


def table_rows(workdir: str, name: str) -> list[list[str]]:
  """The markdown table's body rows of analysis/<name>.md, as cell strings."""
  with open(os.path.join(workdir, "analysis", f"{name}.md")) as f:
    lines = [l for l in f.read().splitlines() if l.startswith("| ")]
  return [[c.strip() for c in l.strip("|").split("|")] for l in lines[1:]]


def golds_and_preds(workdir: str, setting: str) -> tuple[dict, dict]:
  """{query id: gold} of the run's test queries and {query id: prediction} of `setting`, read
  straight from the LaMP-format files."""
  preds = _outputs(os.path.join(workdir, "predictions", f"{setting}.json"))
  golds = {}
  for split in ("train", "dev"):
    golds.update(_outputs(os.path.join(workdir, "data", f"{split}_outputs.json")))
  return {i: golds[i] for i in preds}, preds


def _outputs(path: str) -> dict:
  with open(path) as f:
    return {g["id"]: g["output"] for g in json.load(f)["golds"]}


def mae(golds: dict, preds: dict, ids=None) -> float:
  """LaMP_3's MAE by hand: an unparsable prediction counts as the farther of 1 and 5."""
  ids = list(golds) if ids is None else list(ids)
  errors = []
  for i in ids:
    g = float(golds[i])
    try:
      p = float(preds[i])
      ok = 1 <= p <= 5
    except ValueError:
      ok = False
    errors.append(abs(p - g) if ok else max(g - 1, 5 - g))
  return sum(errors) / len(errors)
