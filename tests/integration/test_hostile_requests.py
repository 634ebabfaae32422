"""Hostile bytes on a raw socket: what the client gets, what the upstream gets, and that the
sidecar still serves afterwards. Against mitmdump and the runner.

The start of the reliability suite (the reliability issue): each case a request no well-behaved
client sends, checked end to end.
"""

from __future__ import annotations

import http.client
import socket

import pytest

from .processes import Sidecar, Upstream


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
