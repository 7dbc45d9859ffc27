"""The shape of the code, read from its source (AST; nothing is imported).

Rules (issue 13 and /work/shared/ARCHITECTURE.md), each a parametrized test whose id and
message name the offender:

- no import cycle among scalefit's modules (``scalefit/``, ``schemas/`` as ``scalefit.schemas``,
  ``flows/`` as ``scalefit.flows``); imports under ``if TYPE_CHECKING:`` are not run, so they do
  not count here, but imports inside functions do (a lazy import hides a cycle, it does not
  remove it);
- only ``flows/`` imports Prefect;
- directions that never reverse: laws import nothing of fitting; fitting imports nothing of the
  store (nor DuckDB); reports import nothing of fitting; loaders import nothing of fitting;
  schemas import nothing of scalefit outside ``schemas/``; only the command line imports
  ``flows/`` (so Prefect never reaches the library through a flow). These count every
  import, lazy or typing-only: a dependency is a dependency;
- size: no module over ``MAX_MODULE_LINES`` lines, no function over ``MAX_FUNCTION_LINES``
  (see the README's Development section for why these numbers).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Folders of the repository and the module names they have inside the installed package.
SOURCES = {
    "scalefit": ROOT / "scalefit",
    "scalefit.schemas": ROOT / "schemas",
    "scalefit.flows": ROOT / "flows",
}

MAX_MODULE_LINES = 600
"""Physical lines of a module, docstrings and comments included."""
MAX_FUNCTION_LINES = 60
"""Lines of a function's body after its docstring (decorators, signature and docstring are
not counted, so documenting a function never pushes it over), nested functions included."""


@dataclass(frozen=True)
class Import:
    """One imported name, resolved: ``target`` is a scalefit module when ``internal``, else
    the dotted name as written (``prefect.task_runners``)."""

    source: str
    target: str
    line: int
    internal: bool
    lazy: bool  # inside a function
    typing_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        how = " (typing only)" if self.typing_only else " (inside a function)" if self.lazy else ""
        return f"{self.source}:{self.line} imports {self.target}{how}"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def tree(self) -> ast.Module:
        return _parse(self.path)


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def modules() -> dict[str, Module]:
    """Every module of scalefit by its import name. The repository's links
    ``scalefit/schemas`` etc. are skipped: the folders they point to are listed once, under
    the name they import as."""
    found: dict[str, Module] = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder)
            if "__pycache__" in relative.parts or _through_link(folder, relative):
                continue
            parts = list(relative.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join([prefix, *parts])
            found[name] = Module(name, path, is_package)
    return found


def _through_link(folder: Path, relative: Path) -> bool:
    here = folder
    for part in relative.parts[:-1]:
        here = here / part
        if here.is_symlink():
            return True
    return False


def _walk(node: ast.AST, lazy: bool, typing_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, lazy, typing_only
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True, typing_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, lazy, True
                yield from _walk(stmt, lazy, True)
            for stmt in child.orelse:
                yield stmt, lazy, typing_only
                yield from _walk(stmt, lazy, typing_only)
        else:
            yield from _walk(child, lazy, typing_only)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(dotted: str) -> tuple[str, bool]:
    """The scalefit module ``dotted`` names (its longest known prefix), or ``dotted`` itself
    when it is outside scalefit."""
    known = modules()
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate, True
    return dotted, False


@cache
def imports(name: str) -> tuple[Import, ...]:
    """Every import statement of module ``name``, resolved."""
    module = modules()[name]
    out: list[Import] = []
    for node, lazy, typing_only in _walk(module.tree(), False, False):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                targets.append(sub if sub in modules() else origin)
        for dotted in targets:
            target, internal = _resolve(dotted)
            out.append(Import(name, target, node.lineno, internal, lazy, typing_only))
    return tuple(out)


def _in(name: str, group: tuple[str, ...]) -> bool:
    return any(name == g or name.startswith(g + ".") for g in group)


# --- no import cycle ------------------------------------------------------------------------


@cache
def cycles() -> dict[str, list[str]]:
    """For every module on an import cycle, one cycle through it (a list of modules ending
    where it starts). Runtime imports only (module level and inside functions)."""
    graph = {
        name: sorted({i.target for i in imports(name) if i.internal and not i.typing_only})
        for name in modules()
    }
    found: dict[str, list[str]] = {}
    for start in graph:
        path = _path_back(graph, start)
        if path:
            found[start] = path
    return found


def _path_back(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """The shortest import path from ``start`` back to itself, if there is one (BFS)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in parents and nxt != start:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return None


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_cycle(module: str) -> None:
    cycle = cycles().get(module)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# --- only flows/ imports Prefect ----------------------------------------------------------


@pytest.mark.parametrize("module", sorted(modules()))
def test_only_flows_import_prefect(module: str) -> None:
    if _in(module, ("scalefit.flows",)):
        return
    bad = [
        str(i)
        for i in imports(module)
        if not i.internal and _in(i.target, ("prefect", "prefect_dask"))
    ]
    assert not bad, "only flows/ imports Prefect: " + "; ".join(bad)


# --- directions that never reverse ---------------------------------------------------------

FITTING = ("scalefit.fit",)
STORE = (
    "scalefit.store",
    "scalefit.fit_store",
    "scalefit.fit_select",
    "scalefit.user_sql",
    "duckdb",
)


@dataclass(frozen=True)
class Direction:
    rule: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()  # exceptions inside `forbidden`
    exempt: tuple[str, ...] = ()  # modules inside `sources` the rule does not apply to


DIRECTIONS = [
    Direction("laws import nothing of fitting", ("scalefit.laws",), FITTING),
    Direction("fitting imports nothing of the store", ("scalefit.fit",), STORE),
    Direction("reports import nothing of fitting", ("scalefit.report",), FITTING),
    Direction("loaders import nothing of fitting", ("scalefit.load",), FITTING),
    Direction(
        "schemas import nothing of scalefit outside schemas/",
        ("scalefit.schemas",),
        ("scalefit",),
        allowed=("scalefit.schemas",),
    ),
    # Prefect reaches the library only through flows/: the command line starts a flow, nothing
    # else imports one (so `import scalefit.<anything else>` never loads Prefect).
    Direction(
        "only the command line imports flows",
        ("scalefit",),
        ("scalefit.flows",),
        exempt=("scalefit.cli", "scalefit.flows"),
    ),
]


def _direction_cases() -> Iterator[object]:
    for direction in DIRECTIONS:
        members = [
            n
            for n in sorted(modules())
            if _in(n, direction.sources) and not _in(n, direction.exempt)
        ]
        for member in members or [direction.sources[0]]:
            yield pytest.param(direction, member, id=f"{direction.rule}: {member}")


@pytest.mark.parametrize(("direction", "module"), list(_direction_cases()))
def test_import_direction(direction: Direction, module: str) -> None:
    assert module in modules(), (
        f"{module} does not exist, so the rule '{direction.rule}' guards nothing: "
        "it is written for the target layout of issue 13"
    )
    bad = [
        str(i)
        for i in imports(module)
        if _in(i.target, direction.forbidden) and not _in(i.target, direction.allowed)
    ]
    assert not bad, f"{direction.rule}: " + "; ".join(bad)


@cache
def loaded_by(name: str) -> dict[str, list[str]]:
    """Every module that ``import name`` loads (module-level runtime imports, followed), with
    the chain of imports that gets there; external modules by their top-level name."""
    chains: dict[str, list[str]] = {name: [name]}
    stack = [name]
    while stack:
        here = stack.pop()
        for i in imports(here):
            if i.lazy or i.typing_only:
                continue
            target = i.target if i.internal else i.target.split(".")[0]
            if target not in chains:
                chains[target] = [*chains[here], target]
                if i.internal:
                    stack.append(target)
    return chains


TRANSITIVE = [d for d in DIRECTIONS if d.forbidden in (FITTING, STORE)]
"""Directions that also hold for what an import loads: importing laws, a loader or a report
never loads fitting, importing fitting never loads the store or DuckDB."""


def _transitive_cases() -> Iterator[object]:
    for direction in TRANSITIVE:
        members = [n for n in sorted(modules()) if _in(n, direction.sources)]
        for member in members or [direction.sources[0]]:
            yield pytest.param(direction, member, id=f"{direction.rule}, loaded: {member}")


@pytest.mark.parametrize(("direction", "module"), list(_transitive_cases()))
def test_import_direction_of_what_is_loaded(direction: Direction, module: str) -> None:
    assert module in modules(), f"{module} does not exist: '{direction.rule}' guards nothing"
    chains = loaded_by(module)
    bad = [
        " -> ".join(chain)
        for target, chain in sorted(chains.items())
        if _in(target, direction.forbidden) and not _in(target, direction.sources)
    ]
    assert not bad, f"{direction.rule}, but importing {module} loads: " + "; ".join(bad)


# --- size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(modules()))
def test_module_size(module: str) -> None:
    lines = len(modules()[module].path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{modules()[module].path.relative_to(ROOT)} has {lines} lines (limit {MAX_MODULE_LINES})"
    )


def function_lengths(tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, body length) of every function in ``tree``."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                body = child.body
                if (
                    len(body) > 1
                    and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)
                ):
                    body = body[1:]
                length = (child.end_lineno or child.lineno) - body[0].lineno + 1
                yield f"{prefix}{child.name}", child.lineno, length
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


@pytest.mark.parametrize("module", sorted(modules()))
def test_function_size(module: str) -> None:
    long = [
        f"{name} (line {line}): {length} lines"
        for name, line, length in function_lengths(modules()[module].tree())
        if length > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in {module}: " + "; ".join(long)


# --- the checker itself ---------------------------------------------------------------------


def test_the_graph_sees_the_layout() -> None:
    names = modules()
    assert {"scalefit", "scalefit.schemas", "scalefit.flows", "scalefit.store"} <= set(names)
    assert not [n for n in names if _in(n, ("scalefit.tests", "scalefit.benchmarks"))]
    # flows/refresh.py imports prefect (the rule's exception) and scalefit's store
    refresh = imports("scalefit.flows.refresh")
    assert any(i.target.startswith("prefect") and not i.internal for i in refresh)
    assert any(i.target == "scalefit.store" and i.internal for i in refresh)


def test_relative_lazy_and_typing_imports_are_resolved(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\nfrom . import store\nfrom .schemas import TABLES\n"
        "if TYPE_CHECKING:\n    from .config import Settings\n"
        "def f():\n    import prefect\n    from ..scalefit import plan\n"
    )
    tree = ast.parse(source)
    found = []
    for node, lazy, typing_only in _walk(tree, False, False):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node.lineno, lazy, typing_only))
    assert found == [
        (1, False, False),
        (2, False, False),
        (3, False, False),
        (5, False, True),
        (7, True, False),
        (8, True, False),
    ]


def test_function_length_skips_the_docstring() -> None:
    tree = ast.parse('def f():\n    """Doc.\n\n    More.\n    """\n    a = 1\n    return a\n')
    assert list(function_lengths(tree)) == [("f", 1, 2)]


def test_a_cycle_is_found() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": []}
    assert _path_back(graph, "a") == ["a", "b", "c", "a"]
    assert _path_back(graph, "d") is None
