"""Real parts for end-to-end tests: echoing upstream servers and a sidecar process.

    with Upstream("default") as default, Sidecar(default.url, config=path) as sidecar:
        assert sidecar.request("GET", "/").json()["upstream"] == "default"

Everything binds to 127.0.0.1 and every wait is bounded. The client, `send`, and the port
helpers are in `sidecar_dispatcher.testing.loopback`, shared with the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlencode

import pytest

from sidecar_dispatcher.testing.loopback import (
    START_TIMEOUT,
    HeaderFields,
    Response,
    free_port,
    send,
    wait_until_accepting,
)

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT = REPOSITORY / "addons" / "dispatcher.py"
BIN = Path(sys.executable).parent


def require_program(path: Path | None, what: str) -> Path:
    """The program's path; skipped without it, but a failure on CI, which must never skip."""
    if path is not None and path.exists():
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing on CI")
    pytest.skip(f"{what} is not installed")


def binary_payload(size: int, seed: int = 7) -> bytes:
    """Deterministic bytes covering every byte value, including CR, LF and NUL."""
    block = bytes((i * 31 + seed) % 256 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


class Started:
    """`with thing as started:` starts it, and stops it however the block ends."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- upstream servers


@dataclass(frozen=True)
class RequestHead(HeaderFields):
    """A request as a test server received it, up to its body."""

    method: str
    path: str
    headers: list[tuple[str, str]]


@dataclass(frozen=True)
class Received(RequestHead):
    body: bytes


class _EchoHandler(BaseHTTPRequestHandler):
    """Records each request; answers with JSON describing it, or as the path asks.

    /status/<code>  answers <code> with extra headers and two Set-Cookie lines
    /bytes/<n>      answers n deterministic binary bytes
    /delay/<s>      answers as usual after s seconds (a slow destination)
    """

    protocol_version = "HTTP/1.1"
    upstream: Upstream

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        received = Received(self.command, self.path, list(self.headers.items()), body)
        self.upstream.received.append(received)
        if match := re.search(r"/delay/([0-9.]+)$", self.path.partition("?")[0]):
            time.sleep(float(match.group(1)))
        status, extra, payload = 200, [("Content-Type", "application/json")], b""
        if match := re.search(r"/status/(\d+)$", self.path.partition("?")[0]):
            status = int(match.group(1))
            extra = [("X-Upstream-Header", "kept"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
            payload = f"status {status} from {self.upstream.name}".encode()
        elif match := re.search(r"/bytes/(\d+)$", self.path.partition("?")[0]):
            extra = [("Content-Type", "application/octet-stream")]
            payload = binary_payload(int(match.group(1)), seed=3)
        else:
            payload = json.dumps(
                {
                    "upstream": self.upstream.name,
                    "method": self.command,
                    "path": self.path,
                    "headers": received.headers,
                    "body_sha256": hashlib.sha256(body).hexdigest(),
                    "body_length": len(body),
                }
            ).encode()
        self.send_response(status)
        for name, value in [*extra, ("Upstream", self.upstream.name)]:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_in_background[Serving: socketserver.ThreadingMixIn](server: Serving) -> Serving:
    """`server` (a threading socketserver) serving from a daemon thread, as it is returned."""
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()  # type: ignore[attr-defined]
    return server


def stop_serving(server: socketserver.BaseServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


@dataclass
class LoopbackServer(Started):
    """An HTTP server on a free loopback port, served from a daemon thread.

    Subclasses name their request handler class; each handler gets the server object as
    `self.upstream`. `with Upstream("dev") as dev:` serves inside the block only.
    """

    name: str
    server: ThreadingHTTPServer | None = None
    handler_base: ClassVar[type[BaseHTTPRequestHandler]]

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        handler = type(
            f"{self.handler_base.__name__}_{self.name}", (self.handler_base,), {"upstream": self}
        )
        self.server = serve_in_background(ThreadingHTTPServer(("127.0.0.1", 0), handler))
        return self

    def stop(self) -> None:
        stop_serving(self.server)


@dataclass
class Upstream(LoopbackServer):
    """Echoes every request as JSON (see _EchoHandler) and records it."""

    received: list[Received] = field(default_factory=list)
    handler_base: ClassVar[type[BaseHTTPRequestHandler]] = _EchoHandler

    def last(self) -> Received:
        assert self.received, f"upstream {self.name} received nothing"
        return self.received[-1]


# --- the sidecar


ENGINES = ("mitmdump", "runner")


class Sidecar(Started):
    """A real sidecar in reverse mode on a free loopback port.

    engine "mitmdump": `mitmdump --mode reverse:TARGET@PORT -s addons/dispatcher.py`;
    engine "runner": `sidecar-dispatcher run` with SIDECAR_PORT (it derives its reverse-mode
    target from the config's default destination, so `reverse_target` is not used).
    `with Sidecar(...) as sidecar:` starts it and always stops it (fixtures yield inside).
    With `admin=True` its admin listener (/metrics, /healthz, /readyz) is on a free loopback
    port, `admin_port`; otherwise it has none (the runner's default 127.0.0.1:9901 would clash
    between sidecars that run at the same time).
    """

    def __init__(
        self,
        reverse_target: str,
        *,
        config: Path | None = None,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        script: Path = SCRIPT,
        engine: str = "mitmdump",
        admin: bool = False,
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        self.workdir = tempfile.mkdtemp(prefix="sidecar-test-")
        weakref.finalize(self, shutil.rmtree, self.workdir, True)  # holds a CA private key
        self.confdir = os.path.join(self.workdir, "confdir")
        self.log_path = Path(self.workdir) / "sidecar.log"
        admin_address = f"127.0.0.1:{self.admin_port}" if self.admin_port else ""
        extra_env = {"PYTHONUNBUFFERED": "1", "SIDECAR_ADMIN": admin_address}
        if engine == "runner":
            arguments = [str(BIN / "sidecar-dispatcher"), "run"]
            extra_env["SIDECAR_PORT"] = str(self.port)
        else:
            arguments = list(command or [str(BIN / "mitmdump")])
            arguments += ["--mode", f"reverse:{reverse_target}@{self.port}", "-s", str(script)]
            if admin_address:
                arguments += ["--set", f"dispatcher_admin={admin_address}"]
        arguments += ["--set", "listen_host=127.0.0.1", "--set", f"confdir={self.confdir}"]
        if config is not None:
            arguments += ["--set", f"dispatcher_config={config}"]
        for option in options:
            arguments += ["--set", option]
        self.engine = engine
        self.arguments = arguments
        self.env = {**os.environ, **extra_env, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.process = self._spawn()
        try:
            wait_until_accepting(self.port, self.process, "sidecar")
            # The port alone could be another process's (free ports race); mitmproxy says so.
            self.wait_for_log(f"listening at 127.0.0.1:{self.port}", timeout=START_TIMEOUT)
        except (RuntimeError, AssertionError) as e:
            self.stop()
            raise RuntimeError(f"{e}:\n{self.logs()}") from None
        return self

    def admin(self, path: str, method: str = "GET") -> Response:
        """One request to the admin listener (`admin=True`)."""
        assert self.admin_port is not None, "started without admin=True"
        return send(self.admin_port, method, path)

    def run_to_exit(self, timeout: float = START_TIMEOUT) -> int:
        """Start and wait for the process to exit by itself (for configs it must refuse)."""
        self.process = self._spawn()
        try:
            return self.process.wait(timeout)
        finally:
            self.stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                self.arguments,
                cwd=REPOSITORY,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5.0, count: int = 1) -> str:
        """The logs once `text` is in them `count` times; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (logs := self.logs()).count(text) >= count:
                return logs
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged {count}x within {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        stop_process(self.process)

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Response:
        return send(self.port, method, path, headers, body)


@dataclass
class ServingProcess:
    """A sidecar started by a test's own command line: its proxy port, admin port and log."""

    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def admin(self, path: str) -> Response:
        """One request to the admin listener, where the probes and Prometheus ask."""
        return send(self.admin_port, "GET", path, timeout=5)

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.admin("/readyz").status) != 200:
            assert status == 503, f"/readyz answered {status}"
            assert self.process.poll() is None, f"exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"not ready within {timeout}s:\n{self.logs()}"
            time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s; nothing when it is not running."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- Prometheus


PROMETHEUS = Path("/usr/bin/prometheus")
PROMETHEUS_WAIT = 30.0  # seconds for Prometheus to scrape, evaluate, answer


class PrometheusServer(Started):
    """Debian's `prometheus` on a free loopback port with this config, its data in `workdir`."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        self.arguments = [
            str(require_program(PROMETHEUS, "prometheus (Debian package prometheus)")),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.arguments, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_until_accepting(self.port, self.process, "prometheus")
            self.wait_for("ready", lambda: send(self.port, "GET", "/-/ready").status == 200)
        except (RuntimeError, AssertionError) as e:
            self.stop()
            raise RuntimeError(f"{e}:\n{self.logs()}") from None
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **parameters: str) -> Any:
        response = send(self.port, "GET", f"/api/v1/{path}?{urlencode(parameters)}")
        assert response.status == 200, (path, parameters, response.body)
        answer = response.json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(
        self, what: str, condition: Callable[[], bool], timeout: float = PROMETHEUS_WAIT
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus: not {what} within {timeout}s:\n{self.logs()}")
            time.sleep(0.25)
