"""Real parts for end-to-end tests: echoing upstream servers, a mitmdump sidecar, a client.

Everything binds to 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT = REPOSITORY / "addons" / "dispatcher.py"
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def binary_payload(size: int, seed: int = 7) -> bytes:
    """Deterministic bytes covering every byte value, including CR, LF and NUL."""
    block = bytes((i * 31 + seed) % 256 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


# --- upstream servers


class HeaderFields:
    """Case-insensitive reads of a (name, value) list, as a request or response carries."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass(frozen=True)
class Received(HeaderFields):
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


class _EchoHandler(BaseHTTPRequestHandler):
    """Records each request; answers with JSON describing it, or as the path asks.

    /status/<code>  answers <code> with extra headers and two Set-Cookie lines
    /bytes/<n>      answers n deterministic binary bytes
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


@dataclass
class LoopbackServer:
    """An HTTP server on a free loopback port, served from a daemon thread.

    Subclasses name their request handler class; each handler gets the server object as
    `self.upstream`.
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
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


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


class Sidecar:
    """A real sidecar in reverse mode on a free loopback port.

    engine "mitmdump": `mitmdump --mode reverse:TARGET@PORT -s addons/dispatcher.py`;
    engine "runner": `sidecar-dispatcher run` with SIDECAR_PORT (it derives its reverse-mode
    target from the config's default destination, so `reverse_target` is not used).
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
    ) -> None:
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="sidecar-test-")
        weakref.finalize(self, shutil.rmtree, self.workdir, True)  # holds a CA private key
        self.confdir = os.path.join(self.workdir, "confdir")
        self.log_path = Path(self.workdir) / "sidecar.log"
        extra_env = {"PYTHONUNBUFFERED": "1"}
        if engine == "runner":
            arguments = [str(BIN / "sidecar-dispatcher"), "run"]
            extra_env["SIDECAR_PORT"] = str(self.port)
        else:
            arguments = list(command or [str(BIN / "mitmdump")])
            arguments += ["--mode", f"reverse:{reverse_target}@{self.port}", "-s", str(script)]
        arguments += ["--set", "listen_host=127.0.0.1", "--set", f"confdir={self.confdir}"]
        if config is not None:
            arguments += ["--set", f"dispatcher_config={config}"]
        for option in options:
            arguments += ["--set", option]
        self.engine = engine
        self.arguments = arguments
        self.env = {**os.environ, **extra_env, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sidecar:
        self.process = self._spawn()
        try:
            wait_until_accepting(self.port, self.process, "sidecar")
            # The port alone could be another process's (free ports race); mitmproxy says so.
            self.wait_for_log(f"listening at 127.0.0.1:{self.port}", timeout=START_TIMEOUT)
        except (RuntimeError, AssertionError) as e:
            self.stop()
            raise RuntimeError(f"{e}:\n{self.logs()}") from None
        return self

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

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (logs := self.logs()):
                return logs
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Response:
        return send(self.port, method, path, headers, body)


def wait_until_accepting(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _accepts(port):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {port} within {START_TIMEOUT}s")
        time.sleep(0.05)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- the client


@dataclass(frozen=True)
class Response(HeaderFields):
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


def send(
    port: int,
    method: str = "GET",
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    *,
    timeout: float = 20.0,
) -> Response:
    """One request on a fresh connection; headers are sent exactly as given."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        own_host = any(name.lower() == "host" for name, _ in headers)
        connection.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Response(response.status, response.getheaders(), response.read())
    finally:
        connection.close()
