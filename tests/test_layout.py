"""The package's shape: no import cycles, a pure core, mitmproxy's internals behind one door.

Every import counts, including those inside functions and under `if TYPE_CHECKING:`: a cycle
hidden there is still two modules that cannot be understood (or moved) one without the other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import sidecar_dispatcher

PACKAGE = Path(sidecar_dispatcher.__file__).parent
NAME = "sidecar_dispatcher"
# Layers that never import mitmproxy (config parsing, routing, the options): testable alone.
PURE = ("config", "core", "options")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join([NAME, *parts])] = path
    return names


def imported(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """(module imported, line) for each import in the file, resolved to a module name."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield (submodule if submodule in known else target), node.lineno


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {
        module: {name for name, _ in imported(module, path, known) if name in known} - {module}
        for module, path in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_package_has_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_config_core_and_options_import_nothing_from_mitmproxy() -> None:
    known = module_names()
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {name}"
        for module, path in known.items()
        if module.removeprefix(f"{NAME}.").split(".")[0] in PURE
        for name, line in imported(module, path, known)
        if name.split(".")[0] == "mitmproxy"
    ]
    assert found == []


def test_only_the_internals_package_imports_a_private_name_of_mitmproxy() -> None:
    known = module_names()
    found = []
    for module, path in known.items():
        if module.startswith(f"{NAME}._mitmproxy"):
            continue
        for name, line in imported(module, path, known):
            if name.split(".")[0] == "mitmproxy" and any(
                part.startswith("_") for part in name.split(".")
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{line}: {name}")
    assert found == []


# The decision's metadata view: defined, written once (for mitmweb and flow files), and read
# back only from recorded flows. Addons read the typed decision (observe/flow_decision.py).
METADATA_VIEW_OWNERS = {
    "core/decision.py",
    "observe/flow_decision.py",
    "core/recording.py",
    "_mitmproxy/fixes/flow_file.py",
}


def test_addons_hand_each_other_the_decision_not_its_metadata_view() -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(
            isinstance(node, ast.Name | ast.alias)
            and (node.id if isinstance(node, ast.Name) else node.name) == "METADATA_KEY"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    }
    assert users <= METADATA_VIEW_OWNERS


# Folders in the order they build on each other: a module imports only from its own folder
# and those before it (the package's __init__ and __main__ are the entry points on top).
LAYERS = ("core", "options", "config", "observe", "_mitmproxy", "proxy", "runner", "tools")


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return len(LAYERS)
    if parts[1] == "testing":  # shipped test helpers: loopback sockets and config text
        return 0
    return LAYERS.index(parts[1])


def test_each_folder_imports_only_from_itself_and_the_layers_before_it() -> None:
    graph = import_graph()
    upward = sorted(
        f"{module} imports {other}"
        for module, others in graph.items()
        for other in others
        if layer_of(other) > layer_of(module) and other != NAME  # `__version__` from the top
    )
    assert upward == []
