"""scripts/layout.py: the package's rooms import downward only, in no circle, from files of at
most 400 lines; only models/ asks which family a model is. And the checker can fail."""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import layout  # noqa: E402 (scripts/ is not a package)


@pytest.fixture(scope="module")
def imports():
  return layout.collect_imports(REPO)


# The real tree. These run on every test run; some fail until the tree is fixed (not xfail,
# so that a fix shows as a pass and a regression as a failure).


def test_every_room_has_a_floor(imports):
  assert layout.unfloored_rooms(imports, REPO) == []


def test_no_room_circle(imports):
  assert layout.room_circles(imports) == []


def test_no_module_circle(imports):
  assert layout.module_circles(imports) == []


def test_no_arrow_up(imports):
  assert [f"{i.where} -> {i.target}" for i in layout.arrows_up(imports)] == []


def test_no_file_over_400_lines():
  assert layout.big_files(REPO) == []


def test_no_family_question_outside_models():
  assert layout.family_questions(REPO) == []


# The checker itself, on a fake package.


def _write(root: pathlib.Path, rel: str, text: str = "") -> None:
  path = root / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)


@pytest.fixture
def fake(tmp_path):
  """data (floor 1) imports train (floor 5) at top level and train imports data back: an arrow
  up, a room circle and a module circle. eval's lazy import of pipeline is an arrow up but no
  module circle. A 401-line file and a family question outside models/ too."""
  for rel in ("oppu_jax/__init__.py", "oppu_jax/data/__init__.py", "oppu_jax/train/__init__.py",
              "oppu_jax/eval/__init__.py", "oppu_jax/pipeline/__init__.py",
              "oppu_jax/models/__init__.py", "benchmarks/bench.py"):
    _write(tmp_path, rel)
  _write(tmp_path, "oppu_jax/data/a.py", "from oppu_jax.train import b\n")
  _write(tmp_path, "oppu_jax/train/b.py", "from . import c\nimport oppu_jax.data.a\n")
  _write(tmp_path, "oppu_jax/train/c.py", "from ..errors import Oops\n")
  _write(tmp_path, "oppu_jax/errors.py", "class Oops(Exception):\n  pass\n")
  _write(tmp_path, "oppu_jax/eval/d.py",
         "def f():\n  from oppu_jax.pipeline import e\n  return e\n")
  _write(tmp_path, "oppu_jax/pipeline/e.py", "from oppu_jax.eval import d\n")
  _write(tmp_path, "oppu_jax/models/m.py", "is_encoder_decoder = True\n")
  _write(tmp_path, "benchmarks/long.py", "x = 1\n" * 401)
  _write(tmp_path, "oppu_jax/pipeline/f.py", "def g(m):\n  return m.is_encoder_decoder\n")
  return tmp_path


def test_the_checker_finds_what_is_wrong(fake, capsys):
  imports = layout.collect_imports(fake)
  edges = layout.room_edges(imports)
  assert edges[("data", "train")] == 1 and edges[("train", "data")] == 1
  assert edges[("train", "errors")] == 1  # `from ..errors import` resolved
  assert layout.room_circles(imports) == [["data", "train"], ["eval", "pipeline"]]
  # Only the top-level circle: eval.d imports pipeline.e inside a function.
  assert layout.module_circles(imports) == [["oppu_jax.data.a", "oppu_jax.train.b"]]
  ups = {(i.where, i.top_level) for i in layout.arrows_up(imports)}
  assert ups == {("oppu_jax/data/a.py:1", True), ("oppu_jax/eval/d.py:2", False)}
  assert layout.big_files(fake) == [(401, "benchmarks/long.py")]
  assert layout.family_questions(fake) == [
      "oppu_jax/pipeline/f.py:2: return m.is_encoder_decoder"]

  assert layout.main(["--root", str(fake)]) == 0  # a report exits 0
  assert layout.main(["--root", str(fake), "--check"]) == 1
  last = capsys.readouterr().out.splitlines()[-1]
  assert last == ("layout check failed: room circles: 2; module circles: 1; arrows up: 2; "
                  "files over 400 lines: 1; family questions outside models/: 1")


def test_a_clean_fake_package_passes(fake):
  for rel in ("oppu_jax/data/a.py", "oppu_jax/eval/d.py", "oppu_jax/pipeline/f.py",
              "benchmarks/long.py"):
    os.remove(fake / rel)
  _write(fake, "oppu_jax/train/b.py", "from . import c\n")
  assert layout.main(["--root", str(fake), "--check"]) == 0
