"""One retry for an idempotent request that met a keep-alive connection the destination closed.

    if may_retry(stream, event): yield from resend_on_fresh_connection(stream)

A destination closes an idle keep-alive connection when it likes (nginx after 75 s, many apps
after 5 s). A request mitmproxy sends on it just then gets "server closed connection" and the
client a 502, though the destination is fine. Like nginx (`proxy_next_upstream error`, not for
non-idempotent methods) and Envoy (`reset` retry of a reused connection), the sidecar sends such
a request once more, on a new connection, when all of these hold:

- the method is idempotent (RFC 9110 §9.2.2): GET, HEAD, OPTIONS, TRACE, PUT, DELETE;
- the whole request was read and kept (not streamed), and nothing of a response has come;
- the connection was opened before this request began (it was reused: a connection opened for
  this very request that closes is a failing destination, not a stale connection);
- it is the request's first retry, and no timeout has answered it.

`HttpStream.handle_protocol_error` (wrapped in overdue.py) asks `may_retry` first; the resend
is what `HttpStream.state_consume_request_body` does with a complete request (checked).
"""

from __future__ import annotations

import logging

from mitmproxy.proxy import layer
from mitmproxy.proxy.layers.http import HttpStream, SendHttp, _http1
from mitmproxy.proxy.layers.http._events import (
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    RequestProtocolError,
    RequestTrailers,
    ResponseProtocolError,
)

from ...core.log_safety import printable
from ..checking import Reach, first_problem, source_lacks, stock_method

logger = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
STALE_CONNECTION = "server closed connection"  # Http1Client, when it closes before any answer
RETRIED = "_dispatcher_retried"  # on an HttpStream: it has had its retry


def may_retry(stream: HttpStream, event: RequestProtocolError | ResponseProtocolError) -> bool:
    if not isinstance(event, ResponseProtocolError) or event.message != STALE_CONNECTION:
        return False
    flow = stream.__dict__.get("flow")
    if flow is None or flow.response is not None or RETRIED in stream.__dict__:
        return False
    request = flow.request
    if request.method.upper() not in IDEMPOTENT or request.stream or request.raw_content is None:
        return False
    if not (
        stream.client_state == stream.state_done
        and stream.server_state == stream.state_wait_for_response_headers
    ):
        return False
    opened = flow.server_conn.timestamp_tcp_setup
    return opened is not None and opened < request.timestamp_start


def resend_on_fresh_connection(stream: HttpStream) -> layer.CommandGenerator[None]:
    stream.__dict__[RETRIED] = True
    request = stream.flow.request
    logger.info(
        "%s %s: the destination closed a reused connection before answering; sent again on a "
        "new one",
        printable(request.method),
        printable(request.path.partition("?")[0]),
    )
    # A new connection: the closed one is no longer `connected`, so mitmproxy opens another.
    # If that fails, mitmproxy's own "connect failed" path answers (no second retry).
    ok = yield from stream.make_server_connection()
    if not ok:
        return
    # As HttpStream.state_consume_request_body sends a complete request (STOCK_RESEND).
    content = request.raw_content
    done_after_headers = not (content or request.trailers)
    server = stream.context.server
    yield SendHttp(RequestHeaders(stream.stream_id, request, done_after_headers), server)
    if content:
        yield SendHttp(RequestData(stream.stream_id, content), server)
    if request.trailers:
        yield SendHttp(RequestTrailers(stream.stream_id, request.trailers), server)
    yield SendHttp(RequestEndOfMessage(stream.stream_id), server)


# What the resend copies, in order (whitespace ignored), and where the message comes from.
STOCK_RESEND = (
    "ok = yield from self.make_server_connection()",
    "content = self.flow.request.raw_content",
    "done_after_headers = not (content or self.flow.request.trailers)",
    "RequestHeaders(self.stream_id, self.flow.request, done_after_headers)",
    "RequestData(self.stream_id, content), self.context.server",
    "RequestTrailers(self.stream_id, self.flow.request.trailers)",
    "yield SendHttp(RequestEndOfMessage(self.stream_id), self.context.server)",
)
STOCK_STALE_MESSAGE = ('"server closed connection"',)


def check_stale_retry(_lean: object = None) -> str | None:
    return first_problem(
        lambda: source_lacks(HttpStream.state_consume_request_body, STOCK_RESEND),
        lambda: source_lacks(stock_method(_http1.Http1Client.read_headers), STOCK_STALE_MESSAGE),
    )


STALE_RETRY_REACHES = (
    Reach(
        "HttpStream: resend on a fresh connection (stale keep-alive)",
        check_stale_retry,
        for_timeouts=True,  # part of the wrapper UpstreamTimeouts installs
    ),
)
