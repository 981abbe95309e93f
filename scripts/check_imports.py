#!/usr/bin/env python3
"""Check the import structure of the package batchtunnel: no cycle between modules, and each part
imports only the parts below it. Standard library only; reads the code, runs none of it.

    scripts/check_imports.py [ROOT]      ROOT: the repository root (default: this script's parent's)

The repository root is the package batchtunnel and each code folder one of its subpackages
(pyproject.toml), so a module's name follows from its path: wire/frames.py is batchtunnel.wire.frames.
Every import counts, those under ``if TYPE_CHECKING:`` too: a cycle of types is still a cycle.

The layers, bottom up (a part may import the parts to its left in LAYERS, and the standard library,
and the third-party packages THIRD_PARTY names for it):

    wire      the protocol, sans I/O: the standard library only
    session   asyncio glue over websockets
    client    the hub side's client of the broker: the standard library only
    certs     cryptography
    broker    the server (aiohttp, prometheus_client)  agent   inside the batch job: no aiohttp, no JupyterHub
                                          (certs/fingerprint.py only, of certs: no cryptography)
    spawner   JupyterHub                  status  the admin status page, a JupyterHub service
    cli       the command: may reach every part (lazily)

Exit status 0 when all holds; 1, with one line per problem, otherwise.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "batchtunnel"
PARTS = ("wire", "session", "client", "certs", "broker", "agent", "spawner", "status", "cli")
MAY_IMPORT: dict[str, set[str]] = {
    "": set(),
    "wire": set(),
    "session": {"wire"},
    "client": {"wire"},
    "certs": {"wire"},
    "broker": {"", "wire", "session"},
    "agent": {"", "wire", "session", "certs"},
    "spawner": {"", "wire", "client"},
    "status": {"", "wire", "client"},
    "cli": {"", *PARTS},
}
"""For each part ("" is the root package, batchtunnel/__init__.py), the parts it may import."""
THIRD_PARTY: dict[str, set[str]] = {
    "": set(),
    "wire": set(),
    "session": {"websockets"},
    "client": set(),
    "certs": {"cryptography"},
    "broker": {"aiohttp", "prometheus_client", "websockets"},
    "agent": {"websockets"},
    "spawner": {"batchspawner", "jupyterhub", "traitlets", "tornado", "jinja2"},
    "status": {"jupyterhub", "tornado", "jinja2"},
    "cli": {"cryptography", "uvloop", "tomli"},
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def part_of(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def imports(root: Path, path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every import in ``path``: our modules by full name, others by top-level name."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # "from P import m": the module P.m if there is one, else P
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else target))
    return found


def check(root: Path) -> list[str]:
    files = [root / "__init__.py", *sorted(p for part in PARTS for p in (root / part).rglob("*.py"))]
    modules = {module_name(root, f) for f in files}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems: list[str] = []
    for path in files:
        name = module_name(root, path)
        part = part_of(name)
        for line, target in imports(root, path, modules):
            where = f"{path.relative_to(root)}:{line}"
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                if target not in modules:
                    problems.append(f"{where}: imports {target}, which is not a module of this tree")
                    continue
                if target != name:
                    graph[name].add(target)
                other = part_of(target)
                if other != part and other not in MAY_IMPORT[part]:
                    problems.append(f"{where}: {part or 'the root package'} may not import {other or 'the root'} "
                                    f"({target})")
            else:
                top = target.split(".")[0]
                if top not in stdlib and top not in THIRD_PARTY[part]:
                    problems.append(f"{where}: {part or 'the root package'} may not import {top}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_path_through(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A closed path inside ``component``, for the message."""
    start = min(component)
    path, seen = [start], {start}
    node = start
    while True:
        succ = min(s for s in graph[node] if s in component)
        path.append(succ)
        if succ in seen:
            return path[path.index(succ):]
        seen.add(succ)
        node = succ


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    problems = check(root)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"imports: no cycle, every part within its layer ({len(PARTS)} parts)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
