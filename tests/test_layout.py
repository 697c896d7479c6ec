"""The package's layout is its architecture: no import cycles, and no sub-package imports a later one.

Imports are read with `ast` (nothing is executed): module-level and function-level imports both
count; imports under `if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
import importlib
import re
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


README = PACKAGE.parent / "README.md"


def _resolve(chain: list[str], env: dict):
    """The object `a.b.c` names (a submodule imported when it is not an attribute yet); raises LookupError."""
    if chain[0] not in env:
        raise LookupError(chain[0])
    obj = env[chain[0]]
    for k, part in enumerate(chain[1:], 1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif isinstance(obj, type) and any(part in getattr(c, "__annotations__", {}) for c in obj.__mro__):
            return None  # a dataclass field: an attribute of instances only, nothing further to resolve
        elif hasattr(obj, "__path__"):  # a package: its submodule
            try:
                obj = importlib.import_module(f"{obj.__name__}.{part}")
            except ImportError:
                raise LookupError(".".join(chain[:k + 1])) from None
        else:
            raise LookupError(".".join(chain[:k + 1]))
    return obj


def _parameters(fn):
    """(names, takes **kwargs) of a callable; a `(*args, **kwargs)` wrapper whose docstring says
    "See `a.b.f`" is followed to `a.b.f`."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, True
    kinds = {p.kind for p in sig.parameters.values()}
    if kinds == {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
        target = re.search(r"See `([\w.]+)`", fn.__doc__ or "")
        if target:
            module, _, name = target.group(1).rpartition(".")
            return _parameters(getattr(importlib.import_module(module), name))
    return set(sig.parameters), inspect.Parameter.VAR_KEYWORD in kinds


def _chain(node) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def check_python(code: str, env: dict) -> tuple[list[str], list[str]]:
    """(problems, checked names) of one piece of README Python: every import of yolocam resolves, every
    `yolocam...` name (or name imported from it) resolves, and every keyword passed to one of them is a
    parameter of it. Names bound to a call's result (`exp = yolocam.Explainer(...)`) stand for its class."""
    problems, checked = [], []
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "yolocam":
                    importlib.import_module(alias.name)
                    env[alias.asname or alias.name.split(".")[0]] = importlib.import_module(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "yolocam":
            module = importlib.import_module(node.module)
            for alias in node.names:
                try:
                    env[alias.asname or alias.name] = _resolve(["m", alias.name], {"m": module})
                    checked.append(f"{node.module}.{alias.name}")
                except LookupError:
                    problems.append(f"from {node.module} import {alias.name}: no such name")
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and (chain := _chain(node.value.func)) and chain[0] in env:
            try:
                cls = _resolve(chain, env)
            except LookupError:
                continue  # reported below
            if isinstance(cls, type):
                env[node.targets[0].id] = cls
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (chain := _chain(node)) and chain[0] in env:
            try:
                _resolve(chain, env)
                checked.append(".".join(chain))
            except LookupError as exc:
                problems.append(f"{'.'.join(chain)}: {exc} does not exist")
        if isinstance(node, ast.Call) and (chain := _chain(node.func)) and chain[0] in env:
            try:
                fn = _resolve(chain, env)
            except LookupError:
                continue  # reported above
            names, var_kw = _parameters(fn) if callable(fn) else (None, True)
            for kw in node.keywords:
                if kw.arg is not None and not var_kw and kw.arg not in names:
                    problems.append(f"{'.'.join(chain)}(..., {kw.arg}=...): no such parameter")
                elif kw.arg is not None:
                    checked.append(f"{'.'.join(chain)}({kw.arg}=)")
    return problems, checked


def check_readme(text: str) -> tuple[list[str], list[str]]:
    """check_python over the README's ```python blocks (one namespace, in order) and over its inline code spans
    that name `yolocam.` or one of its public names (each on its own)."""
    import yolocam

    public = {name: getattr(yolocam, name) for name in yolocam.__all__}
    problems, checked, env = [], [], {}
    for block in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        found = check_python(block, env)
        problems += found[0]
        checked += found[1]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in set(re.findall(r"`([^`\n]+)`", prose)):
        if not re.search(r"\byolocam\.\w|\b(%s)\b" % "|".join(public), span):
            continue
        try:
            found = check_python(span, {"yolocam": yolocam, **public})
        except SyntaxError:  # prose such as `yolocam.scenes`-like names with words around: names only
            found = check_python(" ; ".join(re.findall(r"\byolocam(?:\.\w+)+", span)) or "pass", {"yolocam": yolocam})
        problems += [f"`{span}`: {p}" for p in found[0]]
        checked += found[1]
    return problems, checked


def test_readme_api_names_resolve():
    """Every yolocam name the README's Python and inline code uses exists, and every keyword it passes to one
    is a parameter of it."""
    problems, checked = check_readme(README.read_text(encoding="utf-8"))
    assert not problems, problems
    assert "yolocam.Explainer" in checked and len(set(checked)) >= 15, sorted(set(checked))


def test_the_readme_checker_finds_wrong_names_and_keywords():
    text = ("```python\nimport yolocam\nexp = yolocam.Explainer(methd='gradcam')\nyolocam.explain_all()\n"
            "exp.explian('a.jpg')\nfrom yolocam.distributed import explain_dataset\n"
            "explain_dataset('a', 'b', worker=2)\n```\n"
            "Call `yolocam.validate(model, dta=...)` or `yolocam.metrics.pointing`; `ImageExplanation.saev(out)`.\n")
    problems, _ = check_readme(text)
    for wrong in ("methd", "explain_all", "explian", "worker", "dta", "pointing", "saev"):
        assert any(wrong in p for p in problems), (wrong, problems)
    with pytest.raises(AttributeError):
        __import__("yolocam").no_such_name  # noqa: B018


def test_import_yolocam_does_not_load_torch():
    code = "import sys, yolocam; assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
