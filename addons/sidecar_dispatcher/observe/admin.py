"""The admin listener: /metrics, /healthz and /readyz on a port of its own, never proxying.

    server = AdminServer(bind_admin_socket("127.0.0.1:9901"), status)
    await server.start()                      # in the proxy's event loop
    server.start_in_thread()                  # or, in the --workers supervisor, on its own

`bind_admin_socket` binds at once (so a second process asking for the same address fails at
start-up with a clear message); the server answers GET and HEAD with `Connection: close`.
This module does not import mitmproxy.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

MAX_REQUEST_HEAD = 8192  # bytes; an admin request is a request line and a few headers
READ_TIMEOUT = 5.0


class AdminAddressError(ValueError):
    """The admin address is malformed or cannot be bound."""


@dataclass
class Readiness:
    """Ready once the config is loaded and the proxy listens, until draining starts."""

    config_loaded: bool = False
    listening: bool = False
    draining: bool = False
    on_change: Callable[[bool], None] | None = None

    @property
    def ready(self) -> bool:
        return self.config_loaded and self.listening and not self.draining

    def update(self, **states: bool) -> None:
        for name, value in states.items():
            setattr(self, name, value)
        if self.on_change is not None:
            self.on_change(self.ready)


@dataclass(frozen=True)
class AdminStatus:
    """What the admin listener reports; each callable is asked at request time."""

    metrics: Callable[[], bytes]
    ready: Callable[[], bool]
    healthy: Callable[[], bool] = lambda: True  # answering at all is health in one process


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def parse_admin_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9901` for IPv6) as a (host, port) pair; AdminAddressError if not.

    Port 0 picks a free port (logged at start-up), for tests and benchmarks.
    """
    host, colon, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise AdminAddressError(
            f"admin address {text!r} is not HOST:PORT "
            "(e.g. 127.0.0.1:9901, 0.0.0.0:9901, [::1]:9901)"
        )
    return host, int(port)


def bind_admin_socket(text: str) -> socket.socket:
    """A listening socket on the admin address; AdminAddressError naming it when that fails."""
    host, port = parse_admin_address(text)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Without SO_REUSEPORT: a second sidecar on the same admin address must fail, not share.
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as e:
        hint = " (another sidecar on this machine? give each its own)" if e.errno == 98 else ""
        raise AdminAddressError(
            f"cannot listen on the admin address {text}: {e.strerror or e}{hint}"
        ) from None


class AdminServer:
    def __init__(self, sock: socket.socket, status: AdminStatus) -> None:
        self.sock = sock
        self.status = status
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, sock=self.sock, limit=MAX_REQUEST_HEAD
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.sock.close()

    def start_in_thread(self) -> threading.Thread:
        """Serve from a daemon thread with its own event loop (for a process without one)."""

        async def serve_forever() -> None:
            await self.start()
            await asyncio.Event().wait()

        thread = threading.Thread(
            target=asyncio.run, args=(serve_forever(),), name="admin", daemon=True
        )
        thread.start()
        return thread

    def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, METRICS_CONTENT_TYPE, self.status.metrics()
        if path == "/healthz":
            healthy = self.status.healthy()
            return (200, "text/plain", b"ok\n") if healthy else (503, "text/plain", b"unhealthy\n")
        if path == "/readyz":
            ready = self.status.ready()
            return (200, "text/plain", b"ready\n") if ready else (503, "text/plain", b"not ready\n")
        return 404, "text/plain", b"not found: /metrics, /healthz and /readyz are served here\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            writer.close()
            return
        try:
            status, content_type, body = self.answer(method, target.partition("?")[0])
        except Exception as e:  # a broken collector must not take the listener down
            status, content_type, body = 500, "text/plain", f"{type(e).__name__}\n".encode()
        reason = {
            200: "OK",
            404: "Not Found",
            405: "Method Not Allowed",
            503: "Service Unavailable",
        }
        header = (
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        writer.write(header if method == "HEAD" else header + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
