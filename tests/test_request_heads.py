"""How long a request head may be: the pure rules, and their reach into mitmproxy."""

from __future__ import annotations

import pytest
from mitmproxy.proxy.layers.http import _http1

from sidecar_dispatcher import _mitmproxy as internals
from sidecar_dispatcher.core.request_heads import RequestHeadLimits, head_problem

LIMITS = RequestHeadLimits(request_line=100, header_line=50, head=200)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a", None),  # still arriving, within the limits
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n", (414, "request line over 100 bytes")),
        (b"GET /" + b"a" * 100, (414, "request line over 100 bytes")),  # no end of line yet
        (b"GET / HTTP/1.1\r\nX: " + b"v" * 60, (431, "a header line over 50 bytes")),
        (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 40, (431, "request head over 200 bytes")),
        (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n" + b"body" * 100, None),  # the body is not the head
        (b"POST / HTTP/1.1\nHost: a\n\n" + b"body" * 100, None),  # nor with bare LF line ends
    ],
)
def test_head_problem(data: bytes, problem: tuple[int, str] | None) -> None:
    assert head_problem(data, LIMITS) == problem


def test_the_defaults_are_nginx_s() -> None:
    assert RequestHeadLimits() == RequestHeadLimits(request_line=8192, header_line=8192, head=32768)


def test_the_reader_it_wraps_is_still_the_unbounded_one() -> None:
    assert internals.request_heads.check_read_headers() is None


def test_a_reader_that_changed_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    fragments = (*internals.request_heads.STOCK_READ_HEADERS, "self.max_size_check()")
    monkeypatch.setattr(internals.request_heads, "STOCK_READ_HEADERS", fragments)
    problem = internals.request_heads.check_read_headers()
    assert problem is not None and problem.endswith("no longer has `self.max_size_check()`")


def test_a_replaced_reader_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    def read_headers(self: object, event: object) -> None:
        pass

    monkeypatch.setattr(_http1.Http1Server, "read_headers", read_headers)
    problem = internals.request_heads.check_read_headers()
    assert problem is not None and "already replaced" in problem
