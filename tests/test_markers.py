"""`make test-fast` runs `-m "not spawns"`: a unit test that starts a process or opens a socket
must carry `@pytest.mark.spawns` (or its file `pytestmark = pytest.mark.spawns`), or the inner
loop quietly starts processes again. tests/integration/conftest.py marks that whole folder.

The check reads each tests/test_*.py's syntax tree. A test counts as spawning when it, a fixture
it asks for or a function it names (either defined in the same file, followed to any depth)
names one of SPAWNING. It cannot see further: a helper from another module, or the package's
own code (the inotify watcher runs /sbin/ldconfig through ctypes.util.find_library) - those
tests are marked by hand, as found by running the suite under an audit hook.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
MARKER = "spawns"

# Qualified names (after the file's imports are resolved) that start a process or open a socket;
# a name matches when it starts with one of these.
SPAWNING = (
    "subprocess.",
    "multiprocessing.",
    "concurrent.futures.ProcessPoolExecutor",
    "os.fork",
    "os.system",
    "os.popen",
    "os.posix_spawn",
    "os.spawn",
    "os.exec",
    "asyncio.create_subprocess_",
    "asyncio.start_server",
    "asyncio.open_connection",
    "socket.socket",
    "socket.create_connection",
    "socket.create_server",
    "sidecar_dispatcher.testing.loopback.",  # free_port, accepts, send, ...: all on 127.0.0.1
    "sidecar_dispatcher.observe.admin.bind_admin_socket",
)

Function = ast.FunctionDef | ast.AsyncFunctionDef


def imported_names(tree: ast.Module) -> dict[str, str]:
    """Each name the file's imports bind, to what it stands for: {"sp": "subprocess", ...}."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def qualified(node: ast.expr, imports: dict[str, str]) -> str | None:
    """`asyncio.start_server` -> "asyncio.start_server"; an imported name -> its origin."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in imports:
        return None
    return ".".join([imports[node.id], *reversed(parts)])


def spawning_names(nodes: list[ast.AST], imports: dict[str, str]) -> list[str]:
    found = []
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Attribute | ast.Name):
                name = qualified(node, imports)
                if name and name.startswith(SPAWNING):
                    found.append(name)
    return found


def carries_marker(expressions: list[ast.expr]) -> bool:
    """Whether one of these (decorators, a pytestmark value) is pytest.mark.spawns."""
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == MARKER
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
        for expression in expressions
        for node in ast.walk(expression)
    )


def pytestmark_of(body: list[ast.stmt]) -> list[ast.expr]:
    return [
        statement.value
        for statement in body
        if isinstance(statement, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets)
    ]


def unmarked_spawning_tests(source: str, filename: str) -> list[str]:
    """`test_x: subprocess.run` (or `... via helper`) for each spawning test without the mark;
    `<import>: ...` for a file that spawns while it is imported, which no marker prevents."""
    tree = ast.parse(source, filename)
    imports = imported_names(tree)
    functions: dict[str, Function] = {}
    tests: list[tuple[Function, bool]] = []  # (test, marked by its class)
    for node in tree.body:
        if isinstance(node, Function):
            functions[node.name] = node
            if node.name.startswith("test"):
                tests.append((node, False))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            class_marked = carries_marker(node.decorator_list + pytestmark_of(node.body))
            tests += [
                (item, class_marked)
                for item in node.body
                if isinstance(item, Function) and item.name.startswith("test")
            ]

    why: dict[str, str] = {}  # the file's function name -> the reason it spawns

    def reason(function: Function) -> str:
        """A name it uses directly, or "via" one of the file's functions it names or asks for
        as a fixture that spawns; "" if neither."""
        body: list[ast.AST] = list(function.body)
        direct = spawning_names(body, imports)
        if direct:
            return direct[0]
        named = {n.id for b in body for n in ast.walk(b) if isinstance(n, ast.Name)}
        arguments = {a.arg for a in function.args.args + function.args.kwonlyargs}
        return next((f"via {used}" for used in sorted(named | arguments) if used in why), "")

    changed = True
    while changed:  # until no function newly spawns through one it uses
        changed = False
        for name, function in functions.items():
            if name not in why and (found := reason(function)):
                why[name], changed = found, True

    problems = []
    module_marked = carries_marker(pytestmark_of(tree.body))
    for test, class_marked in tests:
        if module_marked or class_marked or carries_marker(test.decorator_list):
            continue
        if found := reason(test):
            problems.append(f"{test.name}: {found}")
    at_import = [
        statement
        for statement in tree.body
        if not isinstance(statement, ast.Import | ast.ImportFrom | Function | ast.ClassDef)
    ]
    problems += [f"<import>: {name}" for name in spawning_names(list(at_import), imports)]
    return problems


def test_every_unit_test_that_starts_a_process_or_opens_a_socket_is_marked_spawns() -> None:
    files = sorted(TESTS.glob("test_*.py"))
    assert len(files) > 10  # the check reads the unit tests, not nothing
    problems = [
        f"{path.name}::{problem}"
        for path in files
        for problem in unmarked_spawning_tests(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not problems, (
        f"these start a process or open a socket but lack @pytest.mark.{MARKER}, so "
        "`make test-fast` would run them:\n  " + "\n  ".join(problems)
    )


EXAMPLE = """
import subprocess as sp
import pytest
from sidecar_dispatcher.testing.loopback import free_port

def run_child():
    return sp.run(["true"])

@pytest.fixture
def port():
    return free_port()

def test_direct():
    sp.run(["true"])

def test_through_a_helper():
    assert run_child()

def test_through_a_fixture(port):
    assert port

@pytest.mark.spawns
@pytest.mark.parametrize("n", [1])
def test_marked(n, port):
    run_child()

def test_in_memory():
    assert "subprocess" != "socket"

class TestGrouped:
    def test_in_a_class(self):
        run_child()
"""


def test_the_check_follows_helpers_and_fixtures_and_accepts_either_mark() -> None:
    assert unmarked_spawning_tests(EXAMPLE, "example.py") == [
        "test_direct: subprocess.run",
        "test_through_a_helper: via run_child",
        "test_through_a_fixture: via port",
        "test_in_a_class: via run_child",
    ]
    whole_file = EXAMPLE + "\npytestmark = [pytest.mark.spawns]\n"
    assert unmarked_spawning_tests(whole_file, "example.py") == []
    at_import = EXAMPLE + "\nPORT = free_port()\n"
    assert unmarked_spawning_tests(at_import, "example.py")[-1] == (
        "<import>: sidecar_dispatcher.testing.loopback.free_port"
    )


def test_make_test_fast_selects_the_tests_without_the_marker() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test-fast:.*\n\t(.*)$", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no test-fast target"
    assert f'-m "not {MARKER}"' in recipe.group(1)
    assert "--ignore" not in recipe.group(1)  # the marker, not a folder, decides
    assert f'"{MARKER}: ' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
