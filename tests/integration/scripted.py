"""An upstream that plays a script on each connection: exactly the bytes a case needs.

def script(connection: socket.socket, number: int) -> None: ...   # number: 1, 2, ...
with ScriptedUpstream(script) as upstream:   # upstream.url
"""

from __future__ import annotations

import socket
import socketserver
from collections.abc import Callable
from typing import Self

from .processes import Started, serve_in_background, stop_serving

# A script plays one upstream connection: it gets the socket and the number of that connection.
Script = Callable[[socket.socket, int], None]


def read_head(connection: socket.socket) -> bytes:
    """One request head (the tests send no bodies); b"" if the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


class ScriptedUpstream(Started):
    """A loopback TCP server that plays `script` on each connection it accepts."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Self:
        upstream = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream.connections += 1
                self.request.settimeout(10)
                upstream.script(self.request, upstream.connections)

        self.server = serve_in_background(
            socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        )
        return self

    def stop(self) -> None:
        stop_serving(self.server)
