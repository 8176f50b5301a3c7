"""The package's shape, read from its source (ast), not from importing it:

- no import cycle between orchestrator's modules, function-level imports included;
- only orchestrator/cli/ imports typer or the CLI; `fail` and the console exist once there;
- data flows one way: the worker side never imports the driver side (launch, plan, cli).

An edge `a -> b` is any `import b` / `from b import x` in module `a`, wherever it sits in `a`;
`from pkg import name` counts as an edge to `pkg.name` when that is a module, else to `pkg`.
Importing `pkg.mod` also runs `pkg/__init__.py`; those implicit parent edges are not counted
(every package's `__init__` that names its own modules would otherwise be a "cycle").
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "orchestrator"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imported(tree: ast.AST, known: set[str]) -> set[str]:
    """Every orchestrator module this module imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` of a non-module attribute
                name = name.rpartition(".")[0]
            if name.startswith("orchestrator"):
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imported(ast.parse(p.read_text()), known) - {m} for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("def f():\n    from orchestrator.x import y\n")
    assert imported(tree, {"orchestrator.x", "orchestrator.x.y"}) == {"orchestrator.x.y"}


def test_no_import_cycle_inside_orchestrator():
    graph = import_graph()
    assert len(graph) > 40  # the walk saw the whole package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_only_the_cli_imports_typer_or_the_cli():
    for name, path in modules().items():
        if name == "orchestrator.cli" or name.startswith("orchestrator.cli."):
            continue
        bad = {
            m
            for m in _imports_of(path)
            if m == "typer" or m.startswith("typer.") or m.startswith("orchestrator.cli")
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_one_fail_and_one_console():
    fails, consoles = [], []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in ("fail", "_fail"):
                fails.append(path)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name | ast.Attribute)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Console"
            ):
                consoles.append(path)
    console_py = PKG / "cli" / "console.py"
    assert fails == [console_py]
    assert consoles == [console_py]  # its err_console; stdout is rich's own global console


def test_the_worker_side_never_imports_the_driver_side():
    driver = (
        "orchestrator.launch",
        "orchestrator.plan",
        "orchestrator.cli",
        "orchestrator.sweep",
        "orchestrator.ledger",
        "orchestrator.tracking",
    )
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("orchestrator.worker"):
            bad = {d for d in deps if d.startswith(driver)}
            assert not bad, f"{name} imports {sorted(bad)}"
