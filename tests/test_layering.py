"""The package's layers, checked on its source with ``ast`` (so they cannot regress unnoticed).

Every ``import`` counts, at module level, inside functions (a lazy import is still a dependency) and
under ``if TYPE_CHECKING:`` (a type-only import never runs, but a reader still follows it: two files
that name each other's types are one tangle). Checked:

* no import circle among the package's modules, type-only imports included;
* backends import only errors, validation, storage, progress, _version and the backends' own modules;
* the adaptor imports nothing of the index, the backends, the migration, the quality tools or the CLI;
* the index imports nothing of the evaluations, the migration or the CLI; nothing imports the CLI;
* the shared bottom modules (errors, validation, storage, metrics, calibration, manifest, exact...)
  import nothing of the layers above them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "matryoshka_index"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

BACKEND_MAY_IMPORT = {f"{PACKAGE}.{m}" for m in ("errors", "validation", "storage", "progress", "_version")}
ADAPTOR_MUST_NOT_IMPORT = tuple(f"{PACKAGE}.{m}" for m in ("index", "backends", "migrate", "quality", "cli"))

INDEX_MUST_NOT_IMPORT = tuple(f"{PACKAGE}.{m}" for m in ("evaluation", "quality", "plots", "migrate", "cli"))
BOTTOM = tuple(
    f"{PACKAGE}.{m}"
    for m in ("errors", "validation", "storage", "progress", "metrics", "calibration", "exact", "_version")
)
# The manifest sits just above the bottom: it may name the registered backends, nothing higher.
MANIFEST_MAY_IMPORT = (*BOTTOM, f"{PACKAGE}.backends")
ABOVE_BOTTOM = tuple(
    f"{PACKAGE}.{m}" for m in ("adaptor", "backends", "index", "evaluation", "quality", "plots", "migrate", "cli")
)

# The Qdrant side of issue 10 is split in a parallel branch: until it lands, the Qdrant backend
# still imports the adaptor lazily (to open an index stored in a collection). The lead empties this
# set when the branches merge; an edge listed here that no longer exists fails the test too.


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, modules: set[str], here: str, is_package: bool) -> set[str]:
    """The package's modules imported anywhere in ``tree`` (``from pkg import name`` counts ``pkg.name``
    when that is a module, else ``pkg``)."""
    found: set[str] = set()
    base = here if is_package else here.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == PACKAGE:
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {m for m in _imports(tree, modules, name, path.name == "__init__.py") if m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


GRAPH = import_graph()


def _edges(sources: str) -> list[tuple[str, str]]:
    return sorted((a, b) for a, deps in GRAPH.items() if a == sources or a.startswith(sources + ".") for b in deps)


def test_the_walker_sees_lazy_imports() -> None:
    """Guard against a walker that finds nothing: a known lazy import (inside a function) is seen."""
    assert f"{PACKAGE}.index" in GRAPH[PACKAGE]  # the package's __getattr__ imports the index lazily
    assert f"{PACKAGE}.backends.faiss_backend" in GRAPH[f"{PACKAGE}.backends"]


def test_the_walker_sees_type_only_imports() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .core import Thing\n"
    found = _imports(ast.parse(source), {f"{PACKAGE}.index.core"}, f"{PACKAGE}.index.build", False)
    assert found == {f"{PACKAGE}.index.core"}


# No circle, type-only imports included (issue 20).
KNOWN_CIRCLES: list[list[str]] = []


def test_no_import_circle() -> None:
    assert cycles(GRAPH) == KNOWN_CIRCLES


def test_backends_import_only_the_layer_below() -> None:
    bad = [
        (a, b)
        for a, b in _edges(f"{PACKAGE}.backends")
        if b not in BACKEND_MAY_IMPORT and not b.startswith(f"{PACKAGE}.backends")
    ]
    assert bad == []


def test_adaptor_knows_nothing_of_indexes() -> None:
    bad = [(a, b) for a, b in _edges(f"{PACKAGE}.adaptor") if b.startswith(ADAPTOR_MUST_NOT_IMPORT)]
    assert bad == []


def test_the_index_knows_nothing_of_what_evaluates_or_drives_it() -> None:
    bad = [(a, b) for a, b in _edges(f"{PACKAGE}.index") if b.startswith(INDEX_MUST_NOT_IMPORT)]
    assert bad == []


def test_only_the_cli_imports_the_cli() -> None:
    bad = [
        (a, b)
        for a, deps in GRAPH.items()
        for b in deps
        if b.startswith(f"{PACKAGE}.cli") and not a.startswith(f"{PACKAGE}.cli")
    ]
    assert bad == []


def test_the_bottom_modules_import_nothing_above_them() -> None:
    bad = [(a, b) for a in BOTTOM for b in GRAPH.get(a, ()) if b.startswith(ABOVE_BOTTOM)]
    assert bad == []


def test_the_manifest_imports_only_the_bottom_and_the_backend_registry() -> None:
    bad = [b for b in GRAPH.get(f"{PACKAGE}.manifest", ()) if b.startswith(PACKAGE) and b not in MANIFEST_MAY_IMPORT]
    assert bad == []


# The torch coarse engine (issue 14) is the one backend module that uses torch, imported inside the
# functions that run it, so choosing the FAISS or Qdrant backends never loads torch.
TORCH_ENGINE = "backends/torch_engine.py"


def _imports_torch_directly(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch" and not node.level:
            return True
    return False


def test_index_backends_and_shared_modules_never_import_torch_themselves() -> None:
    """Only the adaptor may import torch (and it does so lazily); everything that composes it must not."""
    paths = [*(ROOT / "index").rglob("*.py"), *(ROOT / "backends").rglob("*.py")]
    paths += [ROOT / f"{m}.py" for m in ("calibration", "manifest", "exact", "metrics", "evaluation", "validation")]
    direct = [p.relative_to(ROOT).as_posix() for p in paths if _imports_torch_directly(p)]
    assert [p for p in direct if p != TORCH_ENGINE] == []


def test_the_torch_engine_imports_torch_only_inside_functions() -> None:
    tree = ast.parse((ROOT / TORCH_ENGINE).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any(
        (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "torch" for a in n.names))
        or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "torch")
        for n in top
    )
