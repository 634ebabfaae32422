"""Chunked trailers: mitmproxy's HTTP/1 reader raises on them, the sidecar drops them instead.

    drop_chunked_trailers()   # once per process

mitmproxy 12 reads an HTTP/1 chunked body with h11's `ChunkedReader`, and on a body that ends
with trailer fields raises `NotImplementedError("HTTP trailers are not implemented yet.")`: the
connection dies with "mitmproxy has crashed!" and the client waits for an answer that never
comes (request trailers from a client, or response trailers from a destination alike). The
readers made by `_http1.make_body_reader` are wrapped so that their last event carries no
trailer fields: the message is forwarded whole, its trailers dropped (RFC 9110 §6.5.1 lets a
recipient discard trailer fields it does not understand). When mitmproxy implements trailers,
the check below says so, and this reach can go.
"""

from __future__ import annotations

import logging
from typing import Any

import h11
from mitmproxy.proxy.layers.http import _http1

from ..checking import _STOCK, Reach, first_problem, source_lacks

logger = logging.getLogger(__name__)


class TrailerDroppingReader:
    """A body reader that passes everything on but the trailer fields of its last event."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def __call__(self, buffer: Any) -> Any:
        return self._without_trailers(self.reader(buffer))

    def read_eof(self) -> Any:
        return self._without_trailers(self.reader.read_eof())

    @staticmethod
    def _without_trailers(event: Any) -> Any:
        if isinstance(event, h11.EndOfMessage) and event.headers:
            names = ", ".join(sorted({name.decode("latin-1") for name, _ in event.headers}))
            logger.debug("dropped chunked trailer fields: %s", names)
            return h11.EndOfMessage()
        return event


def drop_chunked_trailers() -> None:
    """Wrap `_http1.make_body_reader` (once in a process)."""
    if hasattr(_http1.make_body_reader, _STOCK):
        return
    stock = _http1.make_body_reader

    def make_body_reader(expected_size: int | None) -> Any:
        reader = stock(expected_size)
        if expected_size is None:  # chunked: the only framing with trailers
            return TrailerDroppingReader(reader)
        return reader

    setattr(make_body_reader, _STOCK, stock)
    _http1.make_body_reader = make_body_reader


STOCK_READ_BODY = ('raise NotImplementedError(f"HTTP trailers are not implemented yet.")',)
STOCK_MAKE_BODY_READER = ("if expected_size is None:", "return ChunkedReader()")


def check_trailers(_lean: object = None) -> str | None:
    current = _http1.make_body_reader
    stock = getattr(current, _STOCK, current)
    return first_problem(
        lambda: source_lacks(_http1.Http1Connection.read_body, STOCK_READ_BODY),
        lambda: source_lacks(stock, STOCK_MAKE_BODY_READER),
        lambda: None if hasattr(h11, "EndOfMessage") else "h11 has no EndOfMessage",
    )


TRAILER_REACHES = (Reach("_http1.make_body_reader (wrapped: trailers dropped)", check_trailers),)
