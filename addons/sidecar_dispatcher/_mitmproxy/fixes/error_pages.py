"""mitmproxy's own error pages: plain text, without what mitmproxy put in them.

    plain_error_pages()   # once per process

When mitmproxy itself answers (a destination that refuses the connection, fails TLS or closes
early; a request it cannot parse), `_http1.make_error_response` and, for HTTP/2 and HTTP/3,
`format_error` write an HTML page that holds mitmproxy's message: the destination's address
(`Connect call failed ('10.0.3.7', 8080)`), or the bytes the client sent. Both are replaced in
the modules that call them: the page is one line of plain text naming the status and, for a
failed destination, only the kind of failure (`connect_refused`, `tls`, ...); the details are in
the sidecar's log, as they are for the router's own answers. (HTTP/2 and HTTP/3 still send
their hard-coded `content-type: text/html` with it; the text has no markup.)
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import http1, status_codes
from mitmproxy.proxy.layers.http import _base, _http1, _http2, _http3

from ...observe.outcome import upstream_error_kind
from ..checking import _STOCK, Reach, first_problem, source_lacks, stock_method


def page_text(status: int, message: str) -> str:
    """The one line the client reads; never mitmproxy's message itself."""
    reason = status_codes.RESPONSES.get(status, "Error")
    if status >= 500:
        detail = f"the destination failed ({upstream_error_kind(message)})"
    elif status == 413:
        detail = "the request body is larger than the sidecar accepts"
    else:
        detail = "the request is malformed"
    return f"sidecar dispatcher: {status} {reason}: {detail}; see the sidecar's log\n"


def format_error(status_code: int, message: str) -> bytes:
    return page_text(status_code, message).encode()


def make_error_response(status_code: int, message: str = "") -> bytes:
    answer = http.Response.make(
        status_code,
        format_error(status_code, message),
        {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"},
    )
    raw: bytes = http1.assemble_response(answer)
    return raw


def plain_error_pages() -> None:
    """Replace mitmproxy's error page functions where its HTTP layers call them (once)."""
    if hasattr(_http1.make_error_response, _STOCK):
        return
    setattr(make_error_response, _STOCK, _http1.make_error_response)
    setattr(format_error, _STOCK, _base.format_error)
    _http1.make_error_response = make_error_response
    for module in (_http1, _http2, _http3):
        module.format_error = format_error  # type: ignore[attr-defined]


def check_error_pages(_lean: object = None) -> str | None:
    stock_page = getattr(_http1.make_error_response, _STOCK, _http1.make_error_response)
    return first_problem(
        lambda: source_lacks(stock_page, ("format_error(status_code, message)",)),
        lambda: source_lacks(
            _http1.Http1Server.send, ("make_error_response(status, event.message)",)
        ),
        lambda: source_lacks(
            stock_method(_http1.Http1Server.read_headers), ("make_error_response(400, str(e))",)
        ),
        lambda: source_lacks(_http2.Http2Connection._handle_event, _H2_PAGE),
        lambda: source_lacks(_http3.Http3Connection._handle_event, _H2_PAGE),
        lambda: (
            None
            if all(hasattr(module, "format_error") for module in (_http1, _http2, _http3))
            else "an HTTP layer module no longer imports format_error"
        ),
    )


_H2_PAGE = ("format_error(status, event.message)",)

ERROR_PAGE_REACHES = (
    Reach("_http1.make_error_response and format_error (replaced: plain text)", check_error_pages),
)
