"""The package's floors (docs/ARCHITECTURE.md): no module imports from a floor above
its own, and no two modules import each other, directly or through others, lazily or
not. Read from the source (every `import` statement, at any depth; `if TYPE_CHECKING:`
blocks do not count), so the floors cannot erode unnoticed."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "knetflow"

#: from the ground up; a module may import its own floor and the floors before it
FLOORS = [
    {"errors", "rng", "version", "initializers", "datasets"},
    {"devices"},
    {"ops"},
    {"graph"},
    {"layers"},
    {"scheduler"},
    {"serialize"},
    {"onnx"},
    {"train"},
    {"distributed"},
    {"", "cli", "demo"},  # the package's top level wires the floors together
]

#: cycles still to break, listed so that no other cycle can appear (none left)
KNOWN_CYCLES: list = []


def _modules() -> dict:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking(node) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and getattr(test, "id", None) == "TYPE_CHECKING"


def _imports(path, modules) -> set:
    """The knetflow modules `path` imports (a package's name for `from pkg import name`
    unless name is a module of it)."""
    out = set()

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("knetflow"):
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    out.add(sub if sub in modules else child.module)
            elif isinstance(child, ast.Import):
                out.update(a.name for a in child.names if a.name.startswith("knetflow"))
            walk(child)

    walk(ast.parse(path.read_text(encoding="utf-8")))
    return {_owner(m, modules) for m in out} - {None}


def _owner(name, modules):
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else None


def _floor(module) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return next(k for k, floor in enumerate(FLOORS) if top in floor)


def _graph() -> dict:
    modules = _modules()
    edges = {}
    for name, path in modules.items():
        # a package's __init__ importing its own modules is how it exports them
        edges[name] = {m for m in _imports(path, modules)
                       if m != name and not (m.startswith(name + ".") and path.name ==
                                             "__init__.py")}
    return edges


def test_every_module_lies_on_a_floor():
    assert all(_floor(m) is not None for m in _modules())


def test_no_module_imports_from_a_floor_above_it():
    upward = sorted(f"{a} imports {b}" for a, deps in _graph().items() for b in deps
                    if _floor(b) > _floor(a))
    assert not upward, "imports from a higher floor:\n" + "\n".join(upward)


def test_no_import_cycles():
    edges = _graph()
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    unknown = [sorted(c) for c in cycles if set(c) not in KNOWN_CYCLES]
    assert not unknown, "modules that import each other: " + repr(unknown)


def _strongly_connected(edges) -> list:
    """Tarjan's components of the import graph (iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
    return out
