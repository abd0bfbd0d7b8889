"""The package's shape: layers in pipeline order, imports only downwards, no cycles, no other module's private
names, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ranker"

LAYERS = ["base", "ranker.io", "ranker.store", "ranker.models", "ranker.first_stage", "ranker.rerank", "ranker.train",
          "ranker.eval", "ranker.serve", "ranker.cli", "front door"]
"""Bottom to top. A module may import from its own layer and those below, never from one above."""

BASE = {"ranker._version", "ranker.cpu", "ranker.errors", "ranker.types", "ranker.interrupt", "ranker.pipeline",
        "ranker.measures", "ranker.fusion"}
FRONT = {"ranker", "ranker.__main__"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    if module in FRONT:
        return LAYERS.index("front door")
    if module in BASE:
        return LAYERS.index("base")
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS or BASE")


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every ``ranker`` module ``source`` (the text of ``module``) imports, at any depth: lazy imports inside
    functions count too, relative imports are resolved, ``from ranker.io import datasets`` names the module."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ranker"]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            target = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else node.module or ""
            if target.split(".")[0] != "ranker":
                continue
            submodules = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            found += [(node.lineno, t) for t in submodules or [target]]
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or path.is_dir()


def imported(path: Path) -> list[tuple[int, str]]:
    return imports_of(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def upward(module: str, imports: list[tuple[int, str]]) -> list[str]:
    return [f"line {line}: {target} ({LAYERS[layer(target)]})" for line, target in imports
            if layer(target) > layer(module)]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        layer(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_go_down_the_layers(path):
    me = module_name(path)
    found = upward(me, imported(path))
    assert not found, f"{me} ({LAYERS[layer(me)]}) imports from a layer above it: {'; '.join(found)}"


def private_imports(source: str, module: str) -> list[str]:
    """``from ranker.x import _name`` of another module's underscore name (dunders such as ``__version__`` are
    public)."""
    return [f"line {node.lineno}: {node.module}.{a.name}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ranker") and node.module != module
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a loop (Tarjan's strongly connected
    components of more than one module; lazy imports count: they only hide a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = [stack.pop()]
            while group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_another_modules_private_names(path):
    found = private_imports(path.read_text(encoding="utf-8"), module_name(path))
    assert not found, f"{module_name(path)} imports private names: {'; '.join(found)} (make them public API)"


def test_every_subpackage_is_a_regular_package_that_says_what_it_holds():
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder.name} is a namespace package: add __init__.py with a docstring"
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init} has no docstring"


def test_no_import_cycles():
    modules = {module_name(p) for p in MODULES}
    graph = {module_name(p): {t for _, t in imported(p) if t in modules and t != module_name(p)} for p in MODULES}
    assert not cycles(graph)


def test_the_cycle_and_private_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not cycles({"a": {"b"}, "b": set()})
    assert private_imports("from ranker.store.build import _batches", "ranker.store.edit")
    assert not private_imports("from ranker._version import __version__\nfrom ranker.store.build import batches",
                               "ranker.store.edit")


def test_models_never_import_training_code():
    for path in [*(PACKAGE / "models").glob("*.py"), *(PACKAGE / "rerank").glob("*.py")]:
        assert not [t for _, t in imported(path) if t.startswith("ranker.train")], path


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)} has {lines} lines (at most {MAX_LINES}): split it by concept"


def test_the_checker_catches_upward_imports_however_written():
    """The rule can fail: absolute, relative, lazy and ``from package import module`` imports are all seen."""
    sources = ["from ranker.train.teacher import train_teacher", "from ..train import teacher",
               "def f():\n    import ranker.cli", "from ranker import cli"]
    for source in sources:
        assert upward("ranker.models.cross_encoder", imports_of(source, "ranker.models.cross_encoder")), source
    assert not upward("ranker.models.cross_encoder", imports_of("from ..io.formats import read_run\n"
                                                                "from ranker.pipeline import Reranker",
                                                                "ranker.models.cross_encoder"))


def test_the_command_line_loads_no_heavy_library():
    """``rank --help`` and every option default come from light modules: torch, pyserini, pandas load on use."""
    import subprocess
    import sys

    code = ("import sys, ranker.cli; print(sorted(m for m in ('torch', 'transformers', 'pyserini', 'jnius', "
            "'pandas', 'scipy', 'ir_measures') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_readme_stays_a_newcomers_page():
    """At most 300 lines, no issue numbers in headings, and every docs/ page it links to is there."""
    import re

    root = PACKAGE.parent
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert not [h for h in readme.splitlines() if h.startswith("#") and re.search(r"issue \d+", h)]
    for link in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (root / link).is_file(), link
