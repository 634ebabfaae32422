"""Informational responses: mitmproxy takes an upstream 1xx for the final response.

    drop_informational_responses()   # once per process

mitmproxy 12's `Http1Client.read_headers` reads the first response head it gets as the
response: a destination's `103 Early Hints` or unsolicited `100 Continue` is forwarded as if it
were the answer, and the real one is then dropped as "unexpected data from server" while the
client waits. The wrapper drops each complete 1xx head other than `101 Switching Protocols`
from the receive buffer before mitmproxy's own method reads it, so the final response is the
one forwarded (RFC 9110 §15.2 lets a proxy drop 1xx it did not ask for, as nginx does).
"""

from __future__ import annotations

import logging
import re

from mitmproxy.proxy import events, layer
from mitmproxy.proxy.layers.http import _http1

from ..checking import _STOCK, Reach, check_wrappable, first_problem, source_lacks, stock_method

logger = logging.getLogger(__name__)

# A status line of 1xx but 101 (whose head mitmproxy must see: it switches protocols).
_INFORMATIONAL = re.compile(rb"HTTP/1\.[01] 1(?!01)\d\d[ \r\n]")


def drop_informational_responses() -> None:
    """Wrap `Http1Client.read_headers` (once in a process)."""
    if hasattr(_http1.Http1Client.read_headers, _STOCK):
        return
    stock = _http1.Http1Client.read_headers

    def read_headers(
        self: _http1.Http1Client, event: events.ConnectionEvent
    ) -> layer.CommandGenerator[None]:
        if isinstance(event, events.DataReceived) and self.request is not None:
            while _INFORMATIONAL.match(bytes(self.buf)[:14]):
                head = self.buf.maybe_extract_lines()
                if head is None:  # not complete yet: wait for the rest, as mitmproxy would
                    break
                logger.debug("dropped an informational response: %s", bytes(head[0])[:40])
        commands_: layer.CommandGenerator[None] = stock(self, event)
        return commands_

    setattr(read_headers, _STOCK, stock)
    _http1.Http1Client.read_headers = read_headers  # type: ignore[method-assign]


# What the wrapper relies on, in order (whitespace ignored): the head is taken from `self.buf`
# as lines, and a complete head becomes the response.
STOCK_READ_HEADERS = (
    "if isinstance(event, events.DataReceived):",
    "response_head = self.buf.maybe_extract_lines()",
    "self.response = http1.read_response_head(",
)


def check_informational(_lean: object = None) -> str | None:
    return first_problem(
        lambda: check_wrappable(_http1.Http1Client, "read_headers", ["self", "event"]),
        lambda: source_lacks(stock_method(_http1.Http1Client.read_headers), STOCK_READ_HEADERS),
    )


INFORMATIONAL_REACHES = (
    Reach("Http1Client.read_headers (wrapped: 1xx dropped)", check_informational),
)
