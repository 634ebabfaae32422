"""What a client may not send through: malformed header values, and hop-by-hop headers.

    Dispatcher().addons   # RequestHygiene runs before the Router, on every request's headers

- A header value holding CR, LF or NUL (an obs-folded line, RFC 9112 §5.2, arrives as CR LF SP
  inside the value) is refused with 400, as nginx does: passed on byte for byte it could split
  the header at the next hop, or mean something else there than here.
- Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the names it lists, `Keep-Alive`,
  `TE` other than `trailers`, `Upgrade` outside a WebSocket handshake, `Proxy-*`) are dropped
  before the dispatcher's
  patches are applied, so that a client cannot nominate a patched header for removal by the
  next hop (`Connection: Authorization`).
"""

from __future__ import annotations

import logging

from mitmproxy import http

from .log_safety import printable
from .router import error_response

logger = logging.getLogger(__name__)

_FORBIDDEN = ("\r", "\n", "\x00")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "upgrade", "proxy-connection"})


class RequestHygiene:
    name = "dispatcher-request-hygiene"

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay:
            return
        request = flow.request
        for name, value in request.headers.items(multi=True):
            if any(character in value for character in _FORBIDDEN):
                logger.warning(
                    "refused %s %s: header %s holds CR, LF or NUL (obs-fold?)",
                    printable(request.method),
                    printable(request.path.partition("?")[0]),
                    printable(name),
                )
                flow.response = error_response(
                    400, f"sidecar dispatcher: header {printable(name)} is malformed"
                )
                return
        strip_hop_by_hop(request)


def strip_hop_by_hop(request: http.Request) -> None:
    """Drop the hop-by-hop fields a client sent (a WebSocket handshake keeps its own)."""
    headers = request.headers
    websocket = (
        headers.get("upgrade", "").lower() == "websocket"
        and "upgrade" in headers.get("connection", "").lower()
    )
    named = {
        token.strip().lower()
        for value in headers.get_all("connection")
        for token in value.split(",")
        if token.strip()
    }
    keep = {"connection", "upgrade"} if websocket else set()
    if headers.get("te", "").strip().lower() == "trailers":
        keep.add("te")  # the one TE that HTTP/2 (and gRPC) expects end to end
    for name in {name.lower() for name in headers}:
        if name in keep:
            continue
        if name in _HOP_BY_HOP or name.startswith("proxy-") or name in named:
            del headers[name]
