"""convodb's imports point down the layers and never form a cycle; no module grows past 600 lines.

The layers are interfaces (server, CLI) → service → agent input (history, formats, tokens) →
storage; modules in none of them (records, parts, errors, validation, ...) sit below all. The
graph is read from the source with :mod:`ast`, not by importing it, so it holds every import:
at module level, inside functions, under ``if TYPE_CHECKING:``, in ``try`` blocks. A
function-local import still makes one module depend on another; it only hides the cycle from
import time.

An edge goes to the module an import statement names: ``from .pkg import name`` is an edge to
``pkg.name`` when that is a submodule, else to ``pkg`` (its ``__init__``); ``import a.b`` is an
edge to ``a.b`` only, not to the parent packages Python initialises on the way. So a package's
``__init__`` that re-exports its submodules is no cycle, unless a submodule imports the package
back.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = "convodb"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

MAX_LINES = 600
# Modules allowed past MAX_LINES, each with the most lines it may have (its size when it was
# listed), so it cannot grow unnoticed; one back under MAX_LINES must leave the list. An entry
# is debt, not a licence: split the module, or raise its ceiling only in a change that says why.
OVERSIZE_ALLOWED: dict[str, tuple[int, str]] = {
    "tokens.py": (669, "one counting rule per medium, beside the table documenting them all"),
    "_message_input.py": (608, "the checks of every part type, in one place"),
}


@dataclass(frozen=True, slots=True)
class Edge:
    path: Path
    """The importing module's file."""
    line: int
    """The line of the first import statement that makes the edge."""


@dataclass(frozen=True, slots=True)
class Graph:
    shown_from: Path
    """Where file names in messages start from."""
    edges: dict[str, dict[str, Edge]] = field(repr=False)
    """Every module -> the modules it imports -> where."""

    def where(self, importer: str, imported: str) -> str:
        edge = self.edges[importer][imported]
        return f"{edge.path.relative_to(self.shown_from).as_posix()}:{edge.line}"


def module_name(root: Path, package: str, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module ``from <module> import ...`` names; ``None`` past the top package."""
    if node.level == 0:
        return node.module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if node.level > len(package):
        return None
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def known(modules: dict[str, Path], name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def build_graph(root: Path, package: str, shown_from: Path | None = None) -> Graph:
    """The import graph of the package in ``root``, read from its source."""
    modules = {module_name(root, package, p): p for p in source_files(root)}
    edges: dict[str, dict[str, Edge]] = {name: {} for name in modules}
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # every statement, at any depth
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(importer, is_package, node)
                if base is None:
                    continue
                submodules = (f"{base}.{alias.name}" for alias in node.names)
                targets = [sub if sub in modules else base for sub in submodules]
            else:
                continue
            for target in targets:
                if target != package and not target.startswith(f"{package}."):
                    continue
                imported = known(modules, target)
                if imported is not None and imported != importer:
                    edges[importer].setdefault(imported, Edge(path, node.lineno))
    return Graph(shown_from or root.parent, edges)


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """Tarjan's components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def shortest_cycle(graph: Graph, component: set[str], start: str) -> list[str]:
    """A shortest cycle from ``start`` back to it, inside its component (breadth first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if start in graph.edges[node]:
            chain = [node]
            while chain[-1] != start:
                chain.append(parent[chain[-1]])
            return chain[::-1]
        for succ in sorted(graph.edges[node]):
            if succ in component and succ != start and succ not in parent:
                parent[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is in a component but on no cycle")


def cycles(graph: Graph) -> list[list[str]]:
    """For each module on a cycle, the shortest cycle through it; each cycle once, sorted."""
    found: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph.edges):
        for start in component:
            chain = shortest_cycle(graph, component, start)
            first = chain.index(min(chain))
            found.add(tuple(chain[first:] + chain[:first]))
    return sorted(list(c) for c in found)


def shared_edges(found: list[list[str]]) -> list[str]:
    """Edges on more than one cycle, most shared first: breaking these breaks the most."""
    counts: dict[tuple[str, str], int] = {}
    for chain in found:
        for edge in zip(chain, [*chain[1:], chain[0]], strict=True):
            counts[edge] = counts.get(edge, 0) + 1
    shared = sorted((-n, a, b) for (a, b), n in counts.items() if n > 1)
    return [f"  {a} → {b}: on {-n} of {len(found)} cycles" for n, a, b in shared]


def describe(graph: Graph, chain: list[str]) -> str:
    closed = [*chain, chain[0]]
    hops = "\n".join(
        f"    {a} → {b}  ({graph.where(a, b)})" for a, b in zip(closed, closed[1:], strict=False)
    )
    return f"  {' → '.join(closed)}\n{hops}"


# The layers. A module in none of them (records, parts, errors, validation, ids, ...) sits
# below them all; RULES say what each layer must not import.
def in_(*names: str) -> Callable[[str], bool]:
    return lambda m: any(m == n or m.startswith(f"{n}.") for n in names)


# `python -m convodb` is the CLI's entry point, so convodb.__main__ is part of the CLI.
interface = in_(f"{PACKAGE}.server", f"{PACKAGE}.cli", f"{PACKAGE}.__main__")
service = in_(f"{PACKAGE}._service", f"{PACKAGE}.service")
agent_input = in_(
    f"{PACKAGE}.history", f"{PACKAGE}.formats", f"{PACKAGE}.tokens", f"{PACKAGE}._tool_groups"
)
# The storage modules of design.md: tables and their column types, statements, Database, one
# backend module per database, migrations.
storage = in_(
    f"{PACKAGE}._models",
    f"{PACKAGE}._statements",
    f"{PACKAGE}._dialect",
    f"{PACKAGE}._drivers",
    f"{PACKAGE}._db",
    f"{PACKAGE}._types",
    f"{PACKAGE}.storage",
    f"{PACKAGE}.migrations",
)


def public_surface(m: str) -> bool:
    """``convodb`` itself: its ``__init__`` imports the service, so importing it is too."""
    return m == PACKAGE


RULES: list[tuple[str, Callable[[str], bool], Callable[[str], bool]]] = [
    (
        "the library never imports the interfaces (convodb.server, convodb.cli)",
        lambda m: not interface(m),
        interface,
    ),
    (
        "agent input (history, formats, tokens) never imports the service or the public surface",
        agent_input,
        lambda m: service(m) or public_surface(m),
    ),
    (
        "storage never imports the service, agent input or the public surface",
        storage,
        lambda m: service(m) or agent_input(m) or public_surface(m),
    ),
]


def layer_violations(graph: Graph) -> list[str]:
    found = []
    for importer, targets in sorted(graph.edges.items()):
        for imported in sorted(targets):
            for rule, applies_to, forbidden in RULES:
                if applies_to(importer) and forbidden(imported):
                    where = graph.where(importer, imported)
                    found.append(f"  {importer} → {imported}  ({where}) breaks: {rule}")
    return found


def oversize(root: Path, allowed: Mapping[str, tuple[int, str]] = OVERSIZE_ALLOWED) -> list[str]:
    """Modules past their limit, and allowlist entries that are no longer needed."""
    found = []
    sizes = {
        p.relative_to(root).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in source_files(root)
    }
    for key, lines in sizes.items():
        if key in allowed:
            ceiling = allowed[key][0]
            if lines > ceiling:
                found.append(f"  {key}: {lines} lines, over its allowlisted {ceiling}; split it")
            elif lines <= MAX_LINES:
                found.append(f"  {key}: {lines} lines; remove it from OVERSIZE_ALLOWED")
        elif lines > MAX_LINES:
            found.append(f"  {key}: {lines} lines, over {MAX_LINES}; split it")
    found.extend(
        f"  {key}: no such module; remove it from OVERSIZE_ALLOWED"
        for key in sorted(set(allowed) - set(sizes))
    )
    return found


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(SOURCE, PACKAGE, shown_from=SOURCE.parents[1])


def test_convodb_imports_form_no_cycle(graph: Graph) -> None:
    found = cycles(graph)
    shared = shared_edges(found)
    assert not found, "\n".join(
        [
            "import cycles (every import counts, also in functions and under TYPE_CHECKING):",
            *(describe(graph, c) for c in found),
            *(["edges on several cycles:", *shared] if shared else []),
        ]
    )


def test_imports_point_down_the_layers(graph: Graph) -> None:
    found = layer_violations(graph)
    assert not found, "imports that point up a layer:\n" + "\n".join(found)


def test_no_module_is_over_600_lines() -> None:
    found = oversize(SOURCE)
    assert not found, f"modules over {MAX_LINES} lines (or stale allowlist entries):\n" + (
        "\n".join(found)
    )


# The graph reader itself, on small packages made for the purpose.


def make_package(root: Path, files: dict[str, str], name: str = "pkg") -> Path:
    for relative, text in files.items():
        path = root / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / name


def edge_sets(graph: Graph) -> dict[str, set[str]]:
    return {m: set(targets) for m, targets in graph.edges.items()}


def test_every_kind_of_import_is_an_edge(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "__init__.py": "from .a import A\nfrom . import b\n",
            "a.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .b import B\n"
                "def f():\n    import pkg.sub.c\n"
                "try:\n    from .sub import name\nexcept ImportError:\n    pass\n"
            ),
            "b.py": "import os\nimport pkgextra\nfrom .sub.c import C\n",
            "sub/__init__.py": "from .. import a\nfrom ..a import f\nfrom . import c\n",
            "sub/c.py": "from .. import b, sub\nfrom pkg import nothing\n",
        },
    )
    assert edge_sets(build_graph(root, "pkg")) == {
        "pkg": {"pkg.a", "pkg.b"},
        "pkg.a": {"pkg.b", "pkg.sub.c", "pkg.sub"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.a", "pkg.sub.c"},
        "pkg.sub.c": {"pkg", "pkg.b", "pkg.sub"},
    }


def test_a_cycle_through_function_local_and_type_checking_imports_is_reported(
    tmp_path: Path,
) -> None:
    root = make_package(
        tmp_path,
        {
            "__init__.py": "from .a import A\nfrom .b import B\n",
            "a.py": "from .b import B\n",
            "b.py": "def f():\n    from .c import C\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
        },
    )
    graph = build_graph(root, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert describe(graph, cycles(graph)[0]).splitlines() == [
        "  pkg.a → pkg.b → pkg.c → pkg.a",
        "    pkg.a → pkg.b  (pkg/a.py:1)",
        "    pkg.b → pkg.c  (pkg/b.py:2)",
        "    pkg.c → pkg.a  (pkg/c.py:3)",
    ]


def test_a_package_reexporting_its_submodules_is_no_cycle_until_one_imports_it_back(
    tmp_path: Path,
) -> None:
    files = {"__init__.py": "from .a import A\nfrom .b import B\n", "a.py": "", "b.py": ""}
    assert cycles(build_graph(make_package(tmp_path, files), "pkg")) == []
    files["b.py"] = "from . import A\n"  # A is a name of the package, not a submodule
    assert cycles(build_graph(make_package(tmp_path, files), "pkg")) == [["pkg", "pkg.b"]]


def test_a_layer_violation_names_the_edge_and_the_rule(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "_db.py": "def f():\n    from .formats import to_plain\n",
        "formats/__init__.py": "",
        "history.py": "from .server import app\n",
        "server/__init__.py": "from .. import history\n",
    }
    graph = build_graph(make_package(tmp_path, files, PACKAGE), PACKAGE)
    assert layer_violations(graph) == [
        f"  {PACKAGE}._db → {PACKAGE}.formats  ({PACKAGE}/_db.py:2) breaks: storage never"
        " imports the service, agent input or the public surface",
        f"  {PACKAGE}.history → {PACKAGE}.server  ({PACKAGE}/history.py:1) breaks: the library"
        " never imports the interfaces (convodb.server, convodb.cli)",
    ]


def test_a_module_over_the_limit_or_a_stale_allowlist_entry_is_reported(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {"big.py": "x = 1\n" * 601, "listed.py": "x = 1\n" * 700, "small.py": "x = 1\n" * 600},
    )
    allowed = {"listed.py": (650, "test"), "small.py": (700, "test"), "gone.py": (700, "test")}
    assert oversize(root, allowed) == [
        "  big.py: 601 lines, over 600; split it",
        "  listed.py: 700 lines, over its allowlisted 650; split it",
        "  small.py: 600 lines; remove it from OVERSIZE_ALLOWED",
        "  gone.py: no such module; remove it from OVERSIZE_ALLOWED",
    ]
