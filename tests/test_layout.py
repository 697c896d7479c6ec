"""The package's layout is its architecture: no import cycles, and no sub-package imports a later one.

Imports are read with `ast` (nothing is executed): module-level and function-level imports both
count; imports under `if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yolocam"

# Data-flow order. A module may import from its own sub-package, from an earlier rank, and from the
# top-level base modules (rank 0); never from a later rank. Equal ranks do not import each other.
RANKS = {
    "": 0,  # errors, defaults, _offline, _aliases
    "demo": 1, "inputs": 1,
    "model": 2,
    "cam": 3,
    "output": 4,
    "explain": 5,
    "evaluation": 6,
    "distributed": 7,
    "cli": 8,
}
FACADES = {"yolocam", "yolocam.__main__"}  # the package's front door may import anything


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports (a name imported from a package counts as its module when it is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS) else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_the_walker_sees_relative_function_level_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "yolocam"
    (pkg / "output").mkdir(parents=True)
    (pkg / "output" / "__init__.py").write_text("")
    (pkg / "output" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n"
                                         "def f():\n    from ..cli import main\n")
    (pkg / "output" / "b.py").write_text("from .a import f\n")
    (pkg / "cli.py").write_text("")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        modules = {"yolocam.output", "yolocam.output.a", "yolocam.output.b", "yolocam.cli"}
        assert imported_modules(pkg / "output" / "a.py", modules) == {"yolocam.cli"}
        assert imported_modules(pkg / "output" / "b.py", modules) == {"yolocam.output.a"}
    finally:
        PACKAGE = saved


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_subpackage_has_a_rank(graph):
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(RANKS) - {""}


def test_no_import_cycles(graph):
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_upward_imports_between_subpackages(graph):
    bad = []
    for module, targets in graph.items():
        if module in FACADES:
            continue
        for target in targets:
            src, dst = subpackage(module), subpackage(target)
            if src != dst and RANKS[dst] >= RANKS[src]:
                bad.append(f"{module} ({src or 'base'}) imports {target} ({dst or 'base'})")
    assert not bad, "imports against the data flow:\n" + "\n".join(sorted(bad))


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, f"modules over 420 lines (split them where a seam is natural): {long}"


@pytest.mark.parametrize("old, new", [
    ("yolocam.metrics", "yolocam.evaluation.metrics"),
    ("yolocam.training", "yolocam.evaluation.training"),
    ("yolocam.compare", "yolocam.evaluation.compare"),
    ("yolocam.bench", "yolocam.cli.bench"),
    ("yolocam.layers", "yolocam.model.layers"),
    ("yolocam.scenes", "yolocam.demo.scenes"),
])
def test_old_import_paths_are_the_same_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(old).__spec__.name == new
    import yolocam

    assert getattr(yolocam, old.split(".")[1]) is importlib.import_module(new)


def test_readme_api_names_resolve():
    import yolocam
    from yolocam.layers import align_levels
    from yolocam.training import add_explain_callbacks

    assert callable(align_levels) and callable(add_explain_callbacks)
    for name in ("Explainer", "validate", "load_output", "list_methods", "list_models", "ImageExplanation",
                 "DetectionExplanation", "YolocamError"):
        assert getattr(yolocam, name) is not None
    assert callable(yolocam.metrics.energy_in_box) and callable(yolocam.compare.compare_methods)
    with pytest.raises(AttributeError):
        yolocam.no_such_name  # noqa: B018


def test_import_yolocam_does_not_load_torch():
    code = "import sys, yolocam; assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
