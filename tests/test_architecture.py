"""The import graph: no cycle, no private name imported across modules, the recipe free of the report."""

import ast
from pathlib import Path

import hybridcl

SRC = Path(hybridcl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported hybridcl module, names)], from every import statement, at any depth."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hybridcl"):
                names = [a.name for a in node.names]
                # `from hybridcl.report import plots` imports the module hybridcl.report.plots
                targets = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules] or [node.module]
                found += [(t, names) for t in targets]
            elif isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names if a.name.startswith("hybridcl")]
        graph[name] = [(t, n) for t, n in found if t in modules and t != name]
    return graph


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{m} imports {n} from {t}"
        for m, edges in imports().items()
        for t, names in edges
        for n in names
        if n.startswith("_") and n != "__version__"
    ]
    assert private == []


def test_the_import_graph_has_no_cycle():
    graph = {m: sorted({t for t, _ in edges}) for m, edges in imports().items()}
    # `hybridcl/__init__` only re-exports load_run lazily (inside __getattr__), so that `import
    # hybridcl` stays cheap; modules import `__version__` from it.
    graph["hybridcl"] = []
    # a package's __init__ is imported with any of its modules: count that edge too
    for m in list(graph):
        parent = m.rsplit(".", 1)[0]
        if parent != m and parent in graph and parent != "hybridcl":
            graph[m] = sorted({*graph[m], parent})
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_recipe_does_not_import_the_report():
    graph = imports()
    seen, todo = set(), ["hybridcl.continual"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [t for t, _ in graph[m]]
    assert not any(m.startswith("hybridcl.report") for m in seen)
