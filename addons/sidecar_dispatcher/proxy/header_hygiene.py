"""What may not pass the sidecar either way: malformed header values, and hop-by-hop headers.

    Dispatcher().addons   # HeaderHygiene runs before the Router, on requests and responses

Requests:
- A header value holding CR, LF or NUL (an obs-folded line, RFC 9112 §5.2, arrives as CR LF SP
  inside the value) is refused with 400, as nginx does: passed on byte for byte it could split
  the header at the next hop, or mean something else there than here.
- Hop-by-hop headers (RFC 9110 §7.6.1: the names `Connection` lists, `Keep-Alive`, `TE` other
  than `trailers`, `Upgrade` outside a WebSocket handshake, `Proxy-*`) are dropped before the
  dispatcher's patches are applied, so that a client cannot nominate a patched header for
  removal by the next hop (`Connection: Authorization`).

Responses (before a route's `response` edits): the same hop-by-hop headers are dropped (a
101's `Connection: upgrade` and `Upgrade` stay), and a value holding CR, LF or NUL is made one
line: each obs-fold (RFC 9112 §5.2) and each CR, LF or NUL left (RFC 9110 §5.5) becomes one SP,
as those RFCs let a recipient do instead of rejecting the message. (nginx answers 502 there;
the destination's answer is kept here because a 502 chosen at this point could not discard a
body already on its way, and the repaired value cannot split a header at the next hop.)

`Connection` itself is cut down, not dropped: its `close` and `keep-alive` tokens stay,
because mitmproxy reads them from the same message to decide whether to keep the client's
(request) or the destination's (response) connection open.
"""

from __future__ import annotations

import logging
import re

from mitmproxy import http

from ..core.log_safety import printable
from .router import error_response

logger = logging.getLogger(__name__)

_FORBIDDEN = ("\r", "\n", "\x00")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "upgrade", "proxy-connection"})
# Tokens of `Connection` that mitmproxy's HTTP/1 layers act on (connection reuse).
_CONNECTION_TOKENS = ("close", "keep-alive")
_OBS_FOLD = re.compile(r"\r?\n[ \t]+")
_NOT_IN_A_VALUE = re.compile("[\r\n\x00]")
_FORBIDDEN_RAW = re.compile(rb"[\r\n\x00]")


class HeaderHygiene:
    name = "dispatcher-header-hygiene"

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay:
            return
        request = flow.request
        if (name := malformed_header(request.headers)) is not None:
            logger.warning(
                "refused %s %s: header %s holds CR, LF or NUL (obs-fold?)",
                printable(request.method),
                printable(request.path.partition("?")[0]),
                printable(name),
            )
            flow.response = error_response(
                400, f"sidecar dispatcher: header {printable(name)} is malformed", request.method
            )
            return
        if _nothing_to_strip(request.headers.fields):
            return
        websocket = (
            request.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("connection", "").lower()
        )
        strip_hop_by_hop(request.headers, upgrade=websocket)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not flow.live or flow.is_replay:
            return
        headers = response.headers
        if (name := malformed_header(headers)) is not None:
            logger.warning(
                "the response to %s %s: header %s held CR, LF or NUL, replaced with spaces",
                printable(flow.request.method),
                printable(flow.request.path.partition("?")[0]),
                printable(name),
            )
            one_line_values(headers)
        strip_hop_by_hop(headers, upgrade=response.status_code == 101)


def malformed_header(headers: http.Headers) -> str | None:
    """The first header name whose value holds CR, LF or NUL, or None."""
    # On the raw fields, all values in one search: every request and response passes here.
    fields = headers.fields
    if _FORBIDDEN_RAW.search(b"\x01".join([value for _, value in fields])) is None:
        return None
    return next(name.decode("latin-1") for name, value in fields if _FORBIDDEN_RAW.search(value))


def one_line_values(headers: http.Headers) -> None:
    """Each obs-fold (CR LF, then SP/HTAB), then each CR, LF or NUL left, becomes one SP."""
    for name in {name.lower() for name in headers}:
        values = headers.get_all(name)
        if any(character in value for value in values for character in _FORBIDDEN):
            headers.set_all(name, [_NOT_IN_A_VALUE.sub(" ", _OBS_FOLD.sub(" ", v)) for v in values])


def strip_hop_by_hop(headers: http.Headers, *, upgrade: bool) -> None:
    """Drop hop-by-hop fields; `upgrade`: a WebSocket handshake keeps Connection and Upgrade."""
    if _nothing_to_strip(headers.fields):
        return
    tokens = [
        token.strip().lower()
        for value in headers.get_all("connection")
        for token in value.split(",")
        if token.strip()
    ]
    keep = {"upgrade"} if upgrade else set()
    if headers.get("te", "").strip().lower() == "trailers":
        keep.add("te")  # the one TE that HTTP/2 (and gRPC) expects end to end
    for name in {name.lower() for name in headers}:
        if name in keep:
            continue
        if name in _HOP_BY_HOP or name.startswith("proxy-") or name in tokens:
            del headers[name]
    kept = [token for token in _CONNECTION_TOKENS if token in tokens]
    if upgrade and "upgrade" in tokens:
        kept.append("upgrade")
    if kept:
        headers["Connection"] = ", ".join(kept)


_HOP_BY_HOP_RAW = frozenset(name.encode() for name in _HOP_BY_HOP)
_CONNECTION_TOKENS_RAW = frozenset(token.encode() for token in _CONNECTION_TOKENS)


def _nothing_to_strip(fields: tuple[tuple[bytes, bytes], ...]) -> bool:
    """True for the usual message: no hop-by-hop field but at most one `Connection` whose
    tokens are all `close`/`keep-alive` (what strip_hop_by_hop would leave as it is)."""
    connection = None
    for name, value in fields:
        lowered = name.lower()
        if lowered == b"connection" and connection is None:
            connection = value
        elif lowered in _HOP_BY_HOP_RAW or lowered.startswith(b"proxy-"):
            return False
    if connection is None:
        return True
    tokens = [token.strip().lower() for token in connection.split(b",")]
    return all(token in _CONNECTION_TOKENS_RAW for token in tokens) and len(set(tokens)) == 1
