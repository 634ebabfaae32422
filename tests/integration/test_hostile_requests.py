"""Hostile bytes on a raw socket: what the client gets, what the upstream gets, and that the
sidecar still serves afterwards. Against mitmdump and the runner.

The start of the reliability suite (the reliability issue): each case a request no well-behaved
client sends, checked end to end.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from .conftest import SaveConfig
from .processes import LoopbackServer, Sidecar, Upstream

pytestmark = pytest.mark.reliability


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send `raw` on a fresh connection; the status line, headers and body of the answer.

    The connection is not half-closed: mitmproxy takes a client's FIN as "gone" and answers
    nothing.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(raw)
        response = http.client.HTTPResponse(connection)
        response.begin()
        head = f"HTTP/1.1 {response.status} {response.reason}\r\n".encode()
        return head + str(response.headers).encode() + response.read()


def still_serves(sidecar: Sidecar) -> None:
    assert sidecar.request("GET", "/", [("environment", "dev")]).json()["upstream"] == "dev"


@pytest.mark.parametrize(
    "header",
    [b"X-Note: a\r\n folded: in", b"X-Note: a\rb", b"X-Note: a\x00b"],
    ids=["obs-fold", "bare-cr", "nul"],
)
def test_malformed_header_values_get_400_and_reach_no_upstream(
    sidecar: Sidecar, default_upstream: Upstream, dev_upstream: Upstream, header: bytes
) -> None:
    before = len(default_upstream.received) + len(dev_upstream.received)
    answer = exchange(
        sidecar.port,
        b"GET /hostile HTTP/1.1\r\nHost: sidecar\r\nenvironment: dev\r\n" + header + b"\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert len(default_upstream.received) + len(dev_upstream.received) == before
    still_serves(sidecar)


def test_a_client_cannot_name_a_patched_header_for_removal_downstream(
    sidecar: Sidecar, dev_upstream: Upstream
) -> None:
    answer = exchange(
        sidecar.port,
        b"GET /hop HTTP/1.1\r\nHost: sidecar\r\nenvironment: token\r\n"
        b"Connection: close, Authorization\r\nKeep-Alive: timeout=9\r\n"
        b"Proxy-Authorization: Basic eA==\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    received = dev_upstream.last()
    assert received.path == "/hop"
    assert received.all("Authorization") == ["Bearer s3cret"]
    assert not any("authorization" in v.lower() for v in received.all("Connection"))
    assert received.all("Keep-Alive") == []
    assert received.all("Proxy-Authorization") == []
    still_serves(sidecar)


def test_a_client_asking_for_close_gets_its_connection_closed(sidecar: Sidecar) -> None:
    """Hop-by-hop stripping keeps `Connection: close`: mitmproxy decides on it."""
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as connection:
        connection.sendall(
            b"GET /bye HTTP/1.1\r\nHost: s\r\nenvironment: dev\r\nConnection: close\r\n\r\n"
        )
        received = b""
        while chunk := connection.recv(65536):  # ends only when the sidecar closes
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]


def test_a_malformed_request_gets_a_plain_400_and_one_log_line(sidecar: Sidecar) -> None:
    answer = exchange(
        sidecar.port,
        b"GET / HTTP/1.1\r\nHost: s\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.endswith(
        b"sidecar dispatcher: 400 Bad Request: the request is malformed; see the sidecar's log\n"
    )
    logs = sidecar.wait_for_log("refused GET /: mitmproxy: ")
    assert logs.count("refused GET /: mitmproxy: ") == 1
    still_serves(sidecar)


def test_the_sidecars_own_answer_to_head_has_no_body_and_the_connection_serves_on(
    sidecar: Sidecar,
) -> None:
    """A body after a HEAD's answer would be read as the start of the next response."""
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as connection:
        connection.sendall(  # conflicting keys: the router's own 400
            b"HEAD /conflict HTTP/1.1\r\nHost: s\r\nenvironment: dev\r\nenvironment: qa\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            received += connection.recv(65536)
        connection.settimeout(0.5)  # anything after the head would come right behind it
        with contextlib.suppress(TimeoutError):
            received += connection.recv(65536)
        assert received.startswith(b"HTTP/1.1 400 ") and received.endswith(b"\r\n\r\n"), received
        connection.settimeout(5)
        connection.sendall(b"GET /after HTTP/1.1\r\nHost: s\r\nenvironment: dev\r\n\r\n")
        after = http.client.HTTPResponse(connection)
        after.begin()
        assert after.status == 200
        assert after.read().startswith(b"{")  # the dev upstream's JSON


def test_500_slow_clients_do_not_starve_a_normal_one(sidecar: Sidecar) -> None:
    """Slowloris: each holds a connection with half a request line and never finishes it."""
    slow = []
    try:
        for number in range(500):
            connection = socket.create_connection(("127.0.0.1", sidecar.port), timeout=5)
            connection.sendall(f"GET /slow/{number} HT".encode())
            slow.append(connection)
        for _ in range(3):
            still_serves(sidecar)
        for connection in slow[:50]:  # they are still held open, not dropped to make room
            connection.sendall(b"T")
    finally:
        for connection in slow:
            connection.close()
    still_serves(sidecar)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def pour(port: int, head: bytes, filler: bytes, total: int) -> bytes:
    """Send `head`, then `filler` until `total` bytes or the sidecar answers; its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        sent = len(head)
        connection.settimeout(0.5)  # a send that blocks this long: it has stopped reading
        try:
            while sent < total:
                answered, _, _ = select.select([connection], [], [], 0)
                if answered:  # it has refused: stop pouring, as a client reading would
                    break
                connection.sendall(filler)
                sent += len(filler)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # refused, closed on us, or no longer read: read what it said
        chunks = []
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            connection.settimeout(5)
            while chunk := connection.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def test_a_header_line_that_never_ends_gets_431_and_memory_stays_flat(sidecar: Sidecar) -> None:
    assert sidecar.process is not None
    pid = sidecar.process.pid if sidecar.engine == "mitmdump" else serving_pid(sidecar)
    before = rss_bytes(pid)
    for _ in range(4):  # 4 times 10 MB offered: the sidecar reads at most a limit's worth of each
        answer = pour(
            sidecar.port, b"GET / HTTP/1.1\r\nHost: s\r\nX-Huge: ", b"a" * 65536, 10 * 2**20
        )
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert b"sidecar dispatcher: " in answer and b"Connection: close" in answer
    grown = rss_bytes(pid) - before
    assert grown < 16 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"
    still_serves(sidecar)


def serving_pid(sidecar: Sidecar) -> int:
    """The runner re-executes itself under python -O: the pid stays the same."""
    assert sidecar.process is not None
    return sidecar.process.pid


def test_a_url_over_the_limit_gets_414(sidecar: Sidecar, default_upstream: Upstream) -> None:
    before = len(default_upstream.received)
    answer = exchange(sidecar.port, b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: s\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:100]
    assert len(default_upstream.received) == before
    still_serves(sidecar)


def test_a_head_of_many_lines_over_the_limit_gets_431(sidecar: Sidecar) -> None:
    lines = b"".join(b"X-Line-%d: %s\r\n" % (n, b"v" * 100) for n in range(400))  # ~45 KB
    answer = exchange(sidecar.port, b"GET / HTTP/1.1\r\nHost: s\r\n" + lines + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    still_serves(sidecar)


def test_heads_within_the_limits_pass(sidecar: Sidecar, dev_upstream: Upstream) -> None:
    big = [(f"X-Big-{n}", "v" * 7000) for n in range(3)]  # 21 KB of headers, lines under 8 KiB
    response = sidecar.request("GET", "/big", [("environment", "dev"), *big])
    assert response.status == 200
    assert dev_upstream.last().header("X-Big-2") == "v" * 7000


def test_an_absolute_form_request_goes_upstream_in_origin_form(
    sidecar: Sidecar, dev_upstream: Upstream
) -> None:
    # A client using the sidecar as its http_proxy; an upstream follows the request line.
    answer = exchange(
        sidecar.port,
        b"GET http://app.internal/page?q=1 HTTP/1.1\r\nHost: app.internal\r\n"
        b"environment: dev\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    received = dev_upstream.last()
    assert received.path == "/base/page?q=1"  # not http://127.0.0.1:…/base/page
    assert received.all("Host") == ["example.com"]
    still_serves(sidecar)


def test_log_lines_escape_what_a_client_sent(sidecar: Sidecar) -> None:
    # Two different key values: refused, and the refusal logged with the values escaped.
    answer = exchange(
        sidecar.port,
        b"GET /log-escape HTTP/1.1\r\nHost: s\r\nenvironment: dev\r\n"
        b"environment: qa\x1b[31m\x85forged\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    refused = "refused GET /log-escape: conflicting environment headers"
    logs = sidecar.wait_for_log(refused)
    (line,) = [line for line in logs.splitlines() if refused in line]
    assert "\x1b" not in line and "\x85" not in line
    assert "forged" in line


def test_a_chunked_request_with_trailers_is_answered(
    sidecar: Sidecar, dev_upstream: Upstream
) -> None:
    # mitmproxy raised NotImplementedError on trailers: "mitmproxy has crashed!", no answer.
    answer = exchange(
        sidecar.port,
        b"POST /upload HTTP/1.1\r\nHost: s\r\nenvironment: dev\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert dev_upstream.last().body == b"hello world"
    assert "has crashed" not in sidecar.logs()
    still_serves(sidecar)


class _TrailingHandler(BaseHTTPRequestHandler):
    """Answers in chunks, with a trailer field after the last one."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            b"3\r\nabc\r\n3\r\ndef\r\n0\r\nX-Checksum: 42\r\n\r\n"
        )

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class TrailingUpstream(LoopbackServer):
    handler_base: ClassVar[type[BaseHTTPRequestHandler]] = _TrailingHandler


def test_a_response_with_trailers_reaches_the_client(
    save_config: SaveConfig, default_upstream: Upstream, engine: str
) -> None:
    with TrailingUpstream("trailing") as trailing:
        config = save_config(f"key: environment\ndestination: {trailing.url}\n")
        with Sidecar(default_upstream.url, config=config, engine=engine) as sidecar:
            response = sidecar.request("GET", "/")
            assert response.status == 200
            assert response.body == b"abcdef"
            assert "has crashed" not in sidecar.logs()
