"""Destinations for the protocol tests: HTTPS with a test CA, WebSocket echo, streamed bodies.

    with WebSocketEcho("dev") as server:
        ...  # connect to server.url

Everything binds to 127.0.0.1 and runs in daemon threads; leaving the `with` block stops the
server. Nothing here holds a large body in memory.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar, Self

import trustme
from websockets.sync.server import Server, ServerConnection, serve

from sidecar_dispatcher.testing.loopback import HeaderFields

from .processes import LoopbackServer, RequestHead, Started, Upstream

# --- HTTPS destinations


@dataclass(kw_only=True)
class HttpsUpstream(Upstream):
    """The echoing `Upstream` of processes.py, speaking TLS with `certificate`.

    Its `url` still says http://: use `https_url()`. Handshakes happen in the request threads
    (do_handshake_on_connect=False), so a slow or failed one cannot stall the accepting thread;
    a connection whose handshake fails never becomes a request, so `received` lists only
    requests that were served.
    """

    certificate: trustme.LeafCert

    def start(self) -> Self:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.certificate.configure_cert(context)
        super().start()
        assert self.server is not None
        # No client knows the port yet: wrapping the listening socket now is as good as earlier.
        self.server.socket = context.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        return self


def https_url(upstream: Upstream, host: str = "localhost") -> str:
    return f"https://{host}:{upstream.port}"


# --- WebSocket destinations


@dataclass(frozen=True)
class Upgrade(HeaderFields):
    """The HTTP request that opened a WebSocket connection, as the server received it."""

    path: str
    headers: list[tuple[str, str]]


@dataclass
class WebSocketEcho(Started):
    """A WebSocket server that greets each client by its name, then echoes every message."""

    name: str
    upgrades: list[Upgrade] = field(default_factory=list)
    server: Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # a destination: the sidecar dispatches HTTP

    def start(self) -> Self:
        self.server = serve(self._session, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def _session(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        self.upgrades.append(Upgrade(request.path, list(request.headers.raw_items())))
        connection.send(f"hello from {self.name}")  # the server speaks first, unprompted
        for message in connection:
            connection.send(message)


# --- streamed bodies

CHUNK_SIZE = 64 * 1024
_POOL_SIZE = 61  # prime: a lost, repeated or misplaced chunk changes the stream's hash


def deterministic_chunks(size: int, seed: int = 1) -> Iterator[bytes]:
    """`size` pseudo-random bytes in CHUNK_SIZE pieces, the same for the same seed.

    Cycles through a small pool of random chunks, so any size costs ~4 MB of memory.
    """
    pool = [random.Random(seed * 1_000 + i).randbytes(CHUNK_SIZE) for i in range(_POOL_SIZE)]
    sent = 0
    index = 0
    while sent < size:
        chunk = pool[index % _POOL_SIZE][: size - sent]
        sent += len(chunk)
        index += 1
        yield chunk


@dataclass(frozen=True)
class Transfer(RequestHead):
    """One body a `StreamingUpstream` received or sent, by length and sha256, never kept."""

    length: int
    sha256: str


class _StreamingHandler(BaseHTTPRequestHandler):
    """Hashes request bodies as they arrive; streams <base>/download/<n>?seed=<s>, hashing it."""

    protocol_version = "HTTP/1.1"
    timeout = 120  # a stalled transfer ends the handler thread instead of leaking it
    upstream: StreamingUpstream

    def do_POST(self) -> None:
        digest = hashlib.sha256()
        length = 0
        for chunk in self._body():
            digest.update(chunk)
            length += len(chunk)
        transfer = Transfer(
            self.command, self.path, list(self.headers.items()), length, digest.hexdigest()
        )
        self.upstream.uploads.append(transfer)
        payload = json.dumps(
            {"upstream": self.upstream.name, "length": length, "sha256": transfer.sha256}
        ).encode()
        self._headers(200, "application/json", len(payload))
        self.wfile.write(payload)

    do_PUT = do_POST

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        match = re.search(r"/download/(\d+)$", path)  # after any base path
        if match is None:
            self._headers(404, "text/plain", 0)
            return
        size = int(match.group(1))
        seed = int(query.removeprefix("seed=") or 1)
        self._headers(200, "application/octet-stream", size)
        digest = hashlib.sha256()
        for chunk in deterministic_chunks(size, seed):
            digest.update(chunk)
            self.wfile.write(chunk)
        headers = list(self.headers.items())
        self.upstream.downloads.append(
            Transfer(self.command, self.path, headers, size, digest.hexdigest())
        )

    def _headers(self, status: int, content_type: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Upstream", self.upstream.name)
        self.end_headers()

    def _body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                yield from self._exactly(size)
                self.rfile.readline()
            self.rfile.readline()  # the empty trailer section
        else:
            yield from self._exactly(int(self.headers.get("Content-Length") or 0))

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            chunk = self.rfile.read(min(size, CHUNK_SIZE))
            if not chunk:
                raise ConnectionError(f"body ended {size} bytes early")
            size -= len(chunk)
            yield chunk

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class StreamingUpstream(LoopbackServer):
    """An HTTP/1.1 destination for large bodies: hashes what it receives and what it sends."""

    uploads: list[Transfer] = field(default_factory=list)
    downloads: list[Transfer] = field(default_factory=list)
    handler_base: ClassVar[type[BaseHTTPRequestHandler]] = _StreamingHandler


# --- memory of a process


def _status_kib(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise LookupError(f"{field_name} not in /proc/{pid}/status")


class MemorySampler:
    """Samples a process's resident memory in a thread while a `with` block runs.

    `peak_sampled_mb` is the largest VmRSS seen; `peak_mb` is the kernel's VmHWM at the end,
    the true peak over the process's life (it catches spikes between samples).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.start_mb = 0.0
        self.peak_sampled_mb = 0.0
        self.peak_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemorySampler:
        self.start_mb = _status_kib(self.pid, "VmRSS") / 1024
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak_mb = _status_kib(self.pid, "VmHWM") / 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = _status_kib(self.pid, "VmRSS") / 1024
            except OSError:  # the process is gone; __exit__ reports it when reading VmHWM
                return
            self.peak_sampled_mb = max(self.peak_sampled_mb, rss)
            self.samples += 1
            self._stop.wait(self.interval)


class Stopwatch:
    """Wall-clock seconds a `with` block took."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
