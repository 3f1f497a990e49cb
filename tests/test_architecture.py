"""The package's shape, read from its source: imports run one way, pieces stay small, names mean one
thing. ARCHITECTURE.md describes the layers these tests hold in place.

The import graph is built from the AST of every module under jaxconv/ (nothing is imported to
build it), so a cycle or a deferred import is named by module and line.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import pkgutil

import jaxconv
import jaxconv.core

PACKAGE = pathlib.Path(jaxconv.__file__).parent
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 400
LEVELS = {  # ARCHITECTURE.md's picture: a package imports only from lower levels
    "traits": 0,
    "errors": 0,
    "host_memory": 0,
    "core": 1,
    "sizing": 2,
    "layers": 3,
    "combinators": 3,
    "data": 3,
    "losses": 3,
    "wrappers": 4,
    "models": 5,
    "per_example": 5,
    "inference": 5,
    "train": 6,
    "privacy": 6,
    "analysis": 6,
    "interop": 6,
    "export": 6,
    "distributed": 7,
    "inspect": 7,
    "runs": 8,
    "cli": 9,
}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imported_modules(name: str, node: ast.AST) -> list[str]:
    """The jaxconv modules an import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "jaxconv"]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "jaxconv":
        return []
    # `from package import module` loads the submodule; `from module import name` the module
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def top_level_imports(name: str) -> set[str]:
    found = set()
    for node in TREES[name].body:
        for statement in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            found.update(imported_modules(name, statement))
    return found


def deferred_imports(name: str) -> list[str]:
    """Imports of jaxconv modules inside functions or classes, and `importlib` loads of them."""
    found = []
    for scope in ast.walk(TREES[name]):
        if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        for node in ast.walk(scope):
            if imported_modules(name, node):
                found.append(f"{name}:{node.lineno} imports {', '.join(imported_modules(name, node))}")
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
                found.append(f"{name}:{node.lineno} calls {ast.unparse(node)}")
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the jaxconv modules it imports at load time; a module's import of its own package
    (``jaxconv.runs.loop`` -> ``jaxconv.runs``) counts, the root package's re-exports do not."""
    return {name: top_level_imports(name) - {name} for name in MODULES if name != "jaxconv"}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between jaxconv's top-level modules and packages (``jaxconv.train``, ``jaxconv.core``)."""

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    collapsed: dict[str, set[str]] = {}
    for source, targets in edges.items():
        collapsed.setdefault(top(source), set()).update(top(t) for t in targets if top(t) != top(source))
    return collapsed


def test_the_graph_sees_real_imports():
    edges = graph()
    assert "jaxconv.core" in edges["jaxconv.combinators"]
    assert "jaxconv.layers.conv" in edges["jaxconv.layers"]  # `from jaxconv.layers.conv import ...`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert packages({"jaxconv.x.a": {"jaxconv.y.b"}, "jaxconv.y.b": {"jaxconv.x"}}) == {
        "jaxconv.x": {"jaxconv.y"},
        "jaxconv.y": {"jaxconv.x"},
    }


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_no_import_cycle_between_packages():
    assert cycles(packages(graph())) == []


def test_imports_follow_the_documented_levels():
    edges = packages(graph())
    assert {name.removeprefix("jaxconv.") for name in edges} == set(LEVELS), "give every package a level"
    wrong = [
        f"{source} (level {LEVELS[source.removeprefix('jaxconv.')]}) imports {target}"
        for source, targets in edges.items()
        for target in sorted(targets)
        if LEVELS[target.removeprefix("jaxconv.")] >= LEVELS[source.removeprefix("jaxconv.")]
    ]
    assert wrong == []


def test_no_deferred_imports():
    deferred = [line for name in MODULES for line in deferred_imports(name)]
    assert deferred == [], "imports inside functions (move them to the top, or move the code):\n" + "\n".join(
        deferred
    )


def test_the_deferred_import_check_finds_one():
    TREES["jaxconv.example"] = ast.parse("def f():\n    from jaxconv import core\n")
    MODULES["jaxconv.example"] = PACKAGE / "example.py"
    try:
        assert deferred_imports("jaxconv.example") == ["jaxconv.example:2 imports jaxconv.core"]
    finally:
        del TREES["jaxconv.example"], MODULES["jaxconv.example"]


def function_lengths(name: str) -> list[tuple[str, int]]:
    """Each function's lines from ``def`` to its end, without its docstring."""
    lengths = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0]
            docstring = first.end_lineno - first.lineno + 1 if ast.get_docstring(node) else 0
            lengths.append(
                (f"{name}.{node.name}:{node.lineno}", node.end_lineno - node.lineno + 1 - docstring)
            )
    return lengths


def test_functions_are_short():
    long = [(where, lines) for name in MODULES for where, lines in function_lengths(name)]
    assert [item for item in long if item[1] > MAX_FUNCTION_LINES] == []


def test_modules_are_short():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def all_modules() -> list[str]:
    return ["jaxconv", *(info.name for info in pkgutil.walk_packages(jaxconv.__path__, "jaxconv."))]


def test_no_name_is_both_a_module_and_something_else():
    clashes = []
    for name in all_modules():
        module = importlib.import_module(name)
        if not hasattr(module, "__path__"):
            continue
        for child in pkgutil.iter_modules(module.__path__):
            value = getattr(module, child.name, None)
            if value is not None and not inspect.ismodule(value):
                clashes.append(f"{name}.{child.name} is a module and a {type(value).__name__}")
    assert clashes == []


def test_public_functions_of_one_name_have_one_signature():
    """A public function name means one call: no two `make_train_step`s that take different
    arguments (a package re-exporting its module's function is the same function)."""
    by_name: dict[str, dict[str, str]] = {}
    for name in all_modules():
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", ()):
            value = getattr(module, public)
            if inspect.isfunction(value):
                by_name.setdefault(public, {})[str(inspect.signature(value))] = f"{name}.{public}"
    assert {name: sorted(where.values()) for name, where in by_name.items() if len(where) > 1} == {}


def test_one_unknown_size_and_one_layer_path():
    """``core.UNKNOWN`` (-1) is the one unknown-size sentinel and ``core.LayerPath`` the one path
    of a layer; ``Path`` means pathlib's wherever it appears."""
    found = []
    for name in all_modules():
        names = vars(importlib.import_module(name))
        if names.get("UNKNOWN", jaxconv.core.UNKNOWN) is not jaxconv.core.UNKNOWN or "BATCH" in names:
            found.append(f"{name} has its own UNKNOWN or BATCH")
        if names.get("Path", pathlib.Path) is not pathlib.Path:
            found.append(f"{name}.Path is {names['Path']!r}, not pathlib.Path")
    assert found == []
