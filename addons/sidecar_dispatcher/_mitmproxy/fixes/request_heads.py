"""Bounding request heads: mitmproxy's HTTP/1 server reads a head without limit.

    bound_request_heads(lambda: limits)   # once per process; the limits are asked per request

`Http1Server.read_headers` (mitmproxy/proxy/layers/http/_http1.py) leaves a head that has not
ended in its receive buffer ("FIXME: protect against header size DoS"). The wrapper looks at
that buffer before mitmproxy's own method runs, and when a limit is passed answers 414 or 431
(plain text, `Connection: close`), closes the connection and stops reading: the buffer never
grows past a limit plus one read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers.http import _http1

from ...core.request_heads import RequestHeadLimits, head_problem
from ..checking import _STOCK, Reach, check_wrappable, first_problem, source_lacks, stock_method

logger = logging.getLogger(__name__)


def bound_request_heads(limits: Callable[[], RequestHeadLimits]) -> None:
    """Wrap `Http1Server.read_headers` (once in a process)."""
    if hasattr(_http1.Http1Server.read_headers, _STOCK):
        return
    stock = _http1.Http1Server.read_headers

    def read_headers(
        self: _http1.Http1Server, event: events.ConnectionEvent
    ) -> layer.CommandGenerator[None]:
        if isinstance(event, events.DataReceived):
            problem = head_problem(bytes(self.buf), limits())
            if problem is not None:
                return _refuse(self, *problem)
        commands_: layer.CommandGenerator[None] = stock(self, event)
        return commands_

    setattr(read_headers, _STOCK, stock)
    _http1.Http1Server.read_headers = read_headers  # type: ignore[method-assign]


def _refuse(server: _http1.Http1Server, status: int, reason: str) -> layer.CommandGenerator[None]:
    peer = server.conn.peername
    logger.warning("refused a request from %s: %s (%d)", peer[0] if peer else "?", reason, status)
    answer = http.Response.make(
        status,
        f"sidecar dispatcher: {reason}\n",
        {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"},
    )
    yield commands.SendData(server.conn, http1.assemble_response(answer))
    yield commands.CloseConnection(server.conn)
    server.buf = type(server.buf)()  # let go of what was read
    server.state = server.done


# What the wrapper relies on, in order (whitespace ignored).
STOCK_READ_HEADERS = (
    "if isinstance(event, events.DataReceived):",
    "request_head = self.buf.maybe_extract_lines()",
    "pass  # FIXME: protect against header size DoS",
)


def check_read_headers(_lean: object = None) -> str | None:
    return first_problem(
        lambda: check_wrappable(_http1.Http1Server, "read_headers", ["self", "event"]),
        lambda: source_lacks(stock_method(_http1.Http1Server.read_headers), STOCK_READ_HEADERS),
        lambda: None if hasattr(_http1.Http1Server, "done") else "Http1Server has no done state",
    )


REQUEST_HEAD_REACHES = (
    Reach("Http1Server.read_headers (wrapped: bounded heads)", check_read_headers),
)
