"""The packages import in one direction: the folder layout is the architecture.

Every module under ``capgate/`` is parsed (not imported: a lazy import inside a function counts as
much as one at the top), and each import of another top-level package or module of capgate becomes
an edge of the package graph. A package may import only packages of a lower rank in ``RANKS``;
leaf utilities sit at the bottom, where anyone may import them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import capgate

ROOT = Path(capgate.__file__).parent

# Higher imports lower, never the reverse; two packages of one rank do not import each other.
RANKS: dict[str, int] = {
    "__main__": 9,
    "cli": 8,  # the ``capgate`` command: serve, keys, worker tokens, and the registered subcommands
    "quickstart": 8,  # ``make run``'s first step: a key in the store
    "server": 7,  # in.php / res.php, the worker API over HTTP, pingbacks
    "workers": 6,  # the worker contract (dispatch) and the workers that use it: OCR, sandbox
    "training": 6,  # ``capgate train``: builds OCR profiles the solvers read
    "store": 4,  # the store: SQLite and PostgreSQL behind one interface
    "solvers": 4,  # pure solving code (OCR, the sandbox's fake answers): no store, no workers
    "client": 4,  # the protocol's client: protocol/ only
    "testing": 4,  # a real server process, driven through its CLI: imports nothing of capgate
    "settings": 3,  # operator settings: prices per method of the protocol's registry
    "protocol": 2,  # sans-I/O: methods, codes, answer formats
    # Leaf utilities: import nothing of capgate, so anyone may import them.
    "paths": 1,
    "waiting": 1,
    "manage": 5,  # keys, worker tokens and bans on a database or through a server's admin API
    "cliargs": 1,
    "keys": 1,
    "imageformat": 1,
    "money": 1,  # micro-dollars and their text
}

# Packages whose code runs outside the service too (a client, a solver in a worker process): they must
# never pull in the service's layers, whatever the ranks say.
NEVER_IMPORT = {
    "protocol": {"server", "store", "workers"},
    "solvers": {"server", "store", "workers"},
    "client": {"server", "store", "workers"},
}


def _top(dotted: str) -> str | None:
    """``capgate.server.app`` -> ``server``; ``None`` for anything outside capgate or capgate itself."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "capgate" and len(parts) > 1 else None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(source_text: str, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every capgate top-level name ``module`` imports, with the line, wherever the import is."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source_text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = _top(alias.name)
                if top is not None:
                    yield top, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source == "capgate":  # ``from capgate import settings``: each name is the package
                for alias in node.names:
                    yield alias.name, node.lineno
            else:
                top = _top(source)
                if top is not None:
                    yield top, node.lineno


def _edges() -> dict[tuple[str, str], list[str]]:
    """Package-level edges (importer, imported), each with the places that make it."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        importer = _top(_module_name(path))
        if importer is None:
            continue
        text = path.read_text(encoding="utf-8")
        for imported, line in _imported(text, _module_name(path), path.name == "__init__.py"):
            if imported != importer:
                edges.setdefault((importer, imported), []).append(f"{path.relative_to(ROOT.parent)}:{line}")
    return edges


def _cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node):], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*trail, node])
            if found is not None:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found is not None:
            return found
    return None


def test_every_module_has_a_rank() -> None:
    names = {top for path in ROOT.rglob("*.py") if (top := _top(_module_name(path))) is not None}
    assert names <= set(RANKS), f"give these a rank in RANKS: {sorted(names - set(RANKS))}"


def test_no_cycle_between_packages() -> None:
    cycle = _cycle(_edges())
    assert cycle is None, "a cycle: " + " -> ".join(cycle)


def test_imports_go_down_the_ranks() -> None:
    wrong = [f"{source} -> {target} ({', '.join(places)})"
             for (source, target), places in sorted(_edges().items())
             if RANKS.get(target, 99) >= RANKS.get(source, 0)]
    assert not wrong, "imports against the direction:\n" + "\n".join(wrong)


def test_protocol_solvers_client_stay_out_of_the_service() -> None:
    wrong = [f"{source} -> {target} ({', '.join(places)})"
             for (source, target), places in sorted(_edges().items())
             if target in NEVER_IMPORT.get(source, set())]
    assert not wrong, "\n".join(wrong)


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The parser itself: an import inside a function and a relative import are edges too."""
    text = "def f():\n    import capgate.server.app\n    from ..store import base\n    from capgate import cli\n"
    assert sorted(top for top, _ in _imported(text, "capgate.workers.x", False)) == ["cli", "server", "store"]
