"""The domain package's layers point one way: no module imports, at module or function level, something
that imports it back, and only depu.config reads the environment.

The import graph is read from the source with the stdlib's ast (every ``import`` and ``from ... import``
anywhere in a module, function bodies included; ``if TYPE_CHECKING:`` blocks excluded, as they never run),
so a function-level import that only hides a cycle is caught too.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "layers" / "depu"
PACKAGE = ROOT / "depu"

# Open, owned by the forks feature: suspending a lying host (hosts.suspend) rebuilds its forks through the
# janitor, which reaches tasks and service, which reach hosts. The test fails if this one grows or another
# appears; remove it from here once forks/ breaks it.
KNOWN_CYCLES = [{"depu.forks.hosts", "depu.forks.janitor", "depu.forks.service", "depu.forks.tasks"}]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(name: str) -> set[str]:
    """The package's modules ``name`` imports anywhere in its body (``from a import b`` names a.b if b is a
    module, else a)."""
    path = MODULES[name]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                for branch in child.orelse:  # type: ignore[attr-defined]
                    visit(branch)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    package = package[: len(package) - child.level + 1]
                    base = ".".join(package + ([base] if base else []))
                for alias in child.names:
                    qualified = f"{base}.{alias.name}"
                    found.add(qualified if qualified in MODULES else base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {module for module in found if module in MODULES and module != name}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_cycle_finder_finds_a_function_level_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_domain_package_has_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    assert graph["depu.profiles"] and graph["depu.agents.registry"]  # the reader sees imports at all
    assert [cycle for cycle in cycles(graph) if cycle not in KNOWN_CYCLES] == []


def test_the_pairs_issue_13_named_import_one_way():
    assert "depu.credits" in imports_of("depu.profiles") and "depu.profiles" not in imports_of("depu.credits")
    assert "depu.agents.registry" not in imports_of("depu.agents.verification")
    assert "depu.agents.challenges" not in imports_of("depu.agents.registry")


def test_only_config_reads_the_environment():
    readers = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv"):
                if isinstance(node.value, ast.Name) and node.value.id == "os":
                    readers.append(name)
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                if any(alias.name in ("environ", "getenv") for alias in node.names):
                    readers.append(name)
    assert sorted(set(readers)) == ["depu.config"]
