"""Facts about the package's architecture: which room imports which, circles, arrows up, big
files and model-family questions asked outside models/.

  PYTHONPATH=. .venv/bin/python scripts/layout.py           # the report; always exits 0
  PYTHONPATH=. .venv/bin/python scripts/layout.py --check   # exits 1 with one line if a rule breaks

A room is a subpackage of oppu_jax/ or one of its top-level modules. Rooms sit on floors (FLOORS);
a room may import from its own floor or below, never above. Stdlib only (ast, pathlib), so it runs
before the package's dependencies are installed.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "oppu_jax"

# The one table of floors, lowest first. A room imports only from its floor or below.
FLOORS = {
    "errors": 0, "storage": 0, "files": 0, "logs": 0,
    "data": 1,
    "models": 2, "config": 2,
    "peft": 3,
    "sharding": 4,
    "train": 5,
    "eval": 6,
    "pipeline": 7, "compile_check": 7,
    "analysis": 8, "serve": 8,
    "report": 9, "main": 9,
}

MAX_LINES = 400
# Code outside models/ that asks which family a model is should ask models/ instead.
FAMILY_QUESTION = re.compile(r"is_encoder_decoder|_seq2seq")


@dataclasses.dataclass(frozen=True)
class Import:
  file: str  # relative to the repo root
  line: int
  source: str  # importing module, e.g. oppu_jax.pipeline.run
  target: str  # imported module, e.g. oppu_jax.analysis.common
  top_level: bool  # runs when the source is imported (not inside a function or TYPE_CHECKING)

  @property
  def where(self) -> str:
    return f"{self.file}:{self.line}"


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def room_of(module: str) -> str | None:
  """oppu_jax.pkg.mod -> pkg; oppu_jax.mod -> mod; oppu_jax itself has no room."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def package_files(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted((root / PACKAGE).rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, top_level: bool):
  """Yields (import node, top_level); imports in functions or `if TYPE_CHECKING:` never run
  when the module is imported, so they are not top-level."""
  for child in ast.iter_child_nodes(node):
    if isinstance(child, (ast.Import, ast.ImportFrom)):
      yield child, top_level
    elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      yield from _walk(child, False)
    elif isinstance(child, ast.If) and _is_type_checking(child.test):
      for stmt in child.body:
        yield from _walk(ast.Module(body=[stmt], type_ignores=[]), False)
      for stmt in child.orelse:
        yield from _walk(ast.Module(body=[stmt], type_ignores=[]), top_level)
    else:
      yield from _walk(child, top_level)


def collect_imports(root: pathlib.Path = REPO) -> list[Import]:
  """Every import of oppu_jax.* in every .py under oppu_jax/, nested (lazy) ones included."""
  files = package_files(root)
  modules = {module_name(f, root) for f in files}
  found = []
  for path in files:
    source = module_name(path, root)
    is_package = path.name == "__init__.py"
    rel = str(path.relative_to(root))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    for node, top in _walk(tree, True):
      targets = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      else:
        base = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
          anchor = source.split(".") if is_package else source.split(".")[:-1]
          anchor = anchor[:len(anchor) - (node.level - 1)]
          base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
          # `from pkg import mod` imports the submodule mod; `from pkg import name`, pkg itself.
          sub = f"{base}.{alias.name}"
          targets.append(sub if sub in modules else base)
      for target in dict.fromkeys(targets):  # `from m import a, b` is one import of m
        if target == PACKAGE or target.startswith(PACKAGE + "."):
          found.append(Import(rel, node.lineno, source, target, top))
  return found


def room_edges(imports: list[Import]) -> collections.Counter:
  """(from room, to room) -> number of imports, between different rooms."""
  edges = collections.Counter()
  for imp in imports:
    a, b = room_of(imp.source), room_of(imp.target)
    if a and b and a != b:
      edges[(a, b)] += 1
  return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's components of more than one node (a circle), each sorted, sorted by first node."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []
  nodes = sorted(set(graph) | {b for bs in graph.values() for b in bs})

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(nodes) + 100))
  for v in nodes:
    if v not in index:
      visit(v)
  return sorted(out)


def room_circles(imports: list[Import]) -> list[list[str]]:
  graph = collections.defaultdict(set)
  for a, b in room_edges(imports):
    graph[a].add(b)
  return strongly_connected(graph)


def module_circles(imports: list[Import]) -> list[list[str]]:
  """Circles among modules through top-level imports only: those run at import time, so they
  are the ones that can leave a module half-initialized. Lazy (in-function) imports are fine."""
  graph = collections.defaultdict(set)
  for imp in imports:
    if imp.top_level and imp.source != imp.target:
      graph[imp.source].add(imp.target)
  return strongly_connected(graph)


def unfloored_rooms(imports: list[Import], root: pathlib.Path = REPO) -> list[str]:
  """Rooms with no floor in FLOORS (a new room must be placed before it can be checked)."""
  rooms = {room_of(module_name(f, root)) for f in package_files(root)}
  rooms |= {room_of(i.target) for i in imports}
  return sorted(r for r in rooms if r and r not in FLOORS)


def arrows_up(imports: list[Import]) -> list[Import]:
  """Imports from a room on a lower floor into a room on a higher floor."""
  ups = []
  for imp in imports:
    a, b = room_of(imp.source), room_of(imp.target)
    if a in FLOORS and b in FLOORS and FLOORS[a] < FLOORS[b]:
      ups.append(imp)
  return ups


def line_counts(root: pathlib.Path, folder: str) -> list[tuple[int, str]]:
  """(lines, path) of every .py under root/folder, largest first."""
  counts = []
  for path in sorted((root / folder).rglob("*.py")):
    counts.append((len(path.read_text(encoding="utf-8").splitlines()),
                   str(path.relative_to(root))))
  return sorted(counts, key=lambda c: (-c[0], c[1]))


def big_files(root: pathlib.Path = REPO, limit: int = MAX_LINES) -> list[tuple[int, str]]:
  return [c for folder in (PACKAGE, "benchmarks") for c in line_counts(root, folder)
          if c[0] > limit]


def family_questions(root: pathlib.Path = REPO) -> list[str]:
  """file:line: text for each .py line outside oppu_jax/models/ that asks the model family."""
  models = root / PACKAGE / "models"
  hits = []
  for folder in (PACKAGE, "benchmarks"):
    for path in sorted((root / folder).rglob("*.py")):
      if models in path.parents:
        continue
      for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FAMILY_QUESTION.search(text):
          hits.append(f"{path.relative_to(root)}:{n}: {text.strip()}")
  return hits


def report(root: pathlib.Path = REPO) -> list[str]:
  """Prints the facts; returns the reasons `--check` fails (empty when every rule holds)."""
  imports = collect_imports(root)
  edges = room_edges(imports)
  print(f"room imports ({len(imports)} imports of {PACKAGE}.*, {len(edges)} room-to-room edges):")
  for (a, b), n in sorted(edges.items(), key=lambda e: (FLOORS.get(e[0][0], -1), e[0])):
    print(f"  {a} ({FLOORS.get(a, '?')}) -> {b} ({FLOORS.get(b, '?')}): {n}")

  rooms_c, modules_c = room_circles(imports), module_circles(imports)
  print(f"\nroom circles: {len(rooms_c)}")
  for c in rooms_c:
    print("  " + " <-> ".join(c))
  print(f"module circles (top-level imports): {len(modules_c)}")
  for c in modules_c:
    print("  " + " <-> ".join(c))
    members = set(c)
    for imp in imports:
      if imp.top_level and imp.source in members and imp.target in members:
        print(f"    {imp.where}: {imp.source} -> {imp.target}")

  ups = arrows_up(imports)
  print(f"\narrows up: {len(ups)}")
  for imp in ups:
    a, b = room_of(imp.source), room_of(imp.target)
    lazy = "" if imp.top_level else " (lazy)"
    print(f"  {imp.where}: {a} ({FLOORS[a]}) -> {b} ({FLOORS[b]}) {imp.target}{lazy}")
  unfloored = unfloored_rooms(imports, root)
  if unfloored:
    print(f"rooms with no floor in FLOORS: {', '.join(unfloored)}")

  for folder in (PACKAGE, "benchmarks"):
    print(f"\nlargest files under {folder}/ (over {MAX_LINES} lines marked *):")
    for n, path in line_counts(root, folder)[:10]:
      print(f"  {n:5d} {path}{' *' if n > MAX_LINES else ''}")

  family = family_questions(root)
  print(f"\nfamily questions outside {PACKAGE}/models/ ({FAMILY_QUESTION.pattern}): {len(family)}")
  for hit in family:
    print("  " + hit)

  big = big_files(root)
  reasons = []
  for what, items in (("room circles", rooms_c), ("module circles", modules_c),
                      ("arrows up", ups), (f"files over {MAX_LINES} lines", big),
                      ("family questions outside models/", family),
                      ("rooms with no floor", unfloored)):
    if items:
      reasons.append(f"{what}: {len(items)}")
  return reasons


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true", help="exit 1 if any rule is broken")
  parser.add_argument("--root", type=pathlib.Path, default=REPO, help="the repository root")
  args = parser.parse_args(argv)
  reasons = report(args.root)
  if args.check and reasons:
    print("layout check failed: " + "; ".join(reasons))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
