"""A destination that misbehaves, met by mitmproxy's own HTTP layers with the sidecar's fixes.

Each fix lives in `_mitmproxy` (informational.py, error_pages.py, stale_retry.py); each
test here drives mitmproxy's real layers (tests/proxy_layers.py) with the fix in and, where the
fix exists because of it, shows stock mitmproxy's behaviour too. The same cases run end to end
against real processes in tests/integration/test_broken_upstreams.py.
"""

from __future__ import annotations

import pytest
from mitmproxy.proxy import events
from mitmproxy.proxy.layers.http import HttpLayer, HttpStream, _base, _http1, _http2, _http3

from sidecar_dispatcher import _mitmproxy as internals

from .proxy_layers import ClientConnection

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"


@pytest.fixture
def stock(monkeypatch: pytest.MonkeyPatch) -> None:
    """mitmproxy's HTTP layers as they ship (undone after the test)."""
    read = internals.stock_method(_http1.Http1Client.read_headers)
    monkeypatch.setattr(_http1.Http1Client, "read_headers", read)
    page = internals.stock_method(_http1.make_error_response)
    monkeypatch.setattr(_http1, "make_error_response", page)
    for module in (_http1, _http2, _http3):
        monkeypatch.setattr(module, "format_error", _base.format_error)
    monkeypatch.setattr(HttpLayer, "_handle_event", internals.stock_method(HttpLayer._handle_event))
    monkeypatch.setattr(
        HttpStream,
        "handle_protocol_error",
        internals.stock_method(HttpStream.handle_protocol_error),
    )


@pytest.fixture
def fixed(stock: None) -> None:
    """The layers with the sidecar's fixes installed (as its addons install them)."""
    internals.drop_informational_responses()
    internals.plain_error_pages()
    internals.answer_overdue_flows()


# --- 1xx from the destination


@pytest.mark.usefixtures("stock")
def test_stock_mitmproxy_forwards_a_103_as_the_answer() -> None:
    proxy = ClientConnection()
    proxy.request()
    proxy.from_upstream(EARLY_HINTS + OK)
    assert proxy.client_got().startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"200 OK" not in proxy.client_got()


@pytest.mark.usefixtures("fixed")
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "two-reads"])
def test_a_103_is_dropped_and_the_final_response_forwarded(split: bool) -> None:
    proxy = ClientConnection()
    proxy.request()
    if split:
        proxy.from_upstream(EARLY_HINTS[:20])
        proxy.from_upstream(EARLY_HINTS[20:])
        assert proxy.client_got() == b""
        proxy.from_upstream(OK)
    else:
        proxy.from_upstream(EARLY_HINTS + b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    got = proxy.client_got()
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\nok")
    assert b"103" not in got and b"100 Continue" not in got


@pytest.mark.usefixtures("fixed")
def test_a_101_still_switches_protocols() -> None:
    proxy = ClientConnection()
    proxy.request(
        b"GET /ws HTTP/1.1\r\nHost: s\r\nConnection: Upgrade\r\nUpgrade: tcp-echo\r\n\r\n"
    )
    proxy.from_upstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp-echo\r\n\r\n")
    assert proxy.client_got().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_the_1xx_reach_notices_a_rewritten_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    assert internals.informational.check_informational() is None
    monkeypatch.setattr(
        internals.informational, "STOCK_READ_HEADERS", ("response_head = self.buf.read_head()",)
    )
    problem = internals.informational.check_informational()
    assert problem is not None and "read_head()" in problem


# --- mitmproxy's own error pages


def refused_connect() -> ClientConnection:
    """A request whose destination refused the connection, as mitmproxy reports it."""
    proxy = ClientConnection(hold_connects=True)
    proxy.request()
    connect = proxy.connects[-1]
    proxy.handle(events.OpenConnectionCompleted(connect, "Connect call failed ('10.0.3.7', 80)"))
    return proxy


@pytest.mark.usefixtures("stock")
def test_stock_error_pages_are_html_naming_the_destination() -> None:
    proxy = refused_connect()
    got = proxy.client_got()
    assert b"text/html" in got and b"10.0.3.7" in got


@pytest.mark.usefixtures("fixed")
def test_error_pages_are_one_line_of_plain_text_without_the_address() -> None:
    proxy = refused_connect()
    head, _, page = proxy.client_got().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert b"mitmproxy" not in head  # no Server header naming the engine and its version
    assert page == (
        b"sidecar dispatcher: 502 Bad Gateway: the destination failed (connect_refused); "
        b"see the sidecar's log\n"
    )


@pytest.mark.usefixtures("fixed")
def test_a_malformed_request_gets_a_plain_400_without_its_bytes() -> None:
    proxy = ClientConnection()
    proxy.handle(events.DataReceived(proxy.client, b"GET /<script> HTTP/1.1 x\r\n\r\n"))
    head, _, page = proxy.client_got().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert (
        page
        == b"sidecar dispatcher: 400 Bad Request: the request is malformed; see the sidecar's log\n"
    )


def test_the_error_page_reach_notices_a_rewritten_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    assert internals.error_pages.check_error_pages() is None
    monkeypatch.setattr(internals.error_pages, "_H2_PAGE", ("render_error(status, event)",))
    problem = internals.error_pages.check_error_pages()
    assert problem is not None and "render_error" in problem


# --- a keep-alive connection the destination closed


def second_request_on_a_stale_connection(proxy: ClientConnection, method: bytes = b"GET") -> None:
    proxy.request()
    proxy.from_upstream(OK)
    assert proxy.client_got().endswith(b"ok")
    proxy.sent[proxy.client].clear()
    proxy.request(method + b" /again HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n")
    assert len(proxy.connects) == 1  # the kept-alive connection was reused
    proxy.upstream_closes()  # ... and the destination had just closed it


@pytest.mark.usefixtures("stock")
def test_stock_mitmproxy_answers_502_when_a_reused_connection_was_closed() -> None:
    proxy = ClientConnection()
    second_request_on_a_stale_connection(proxy)
    assert proxy.client_got().startswith(b"HTTP/1.1 502 ")
    assert len(proxy.connects) == 1


@pytest.mark.usefixtures("fixed")
@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"])
def test_an_idempotent_request_is_sent_again_on_a_new_connection(method: bytes) -> None:
    proxy = ClientConnection()
    second_request_on_a_stale_connection(proxy, method)
    assert len(proxy.connects) == 2  # a new connection ...
    assert proxy.sent[proxy.upstream].startswith(
        method + b" /again HTTP/1.1\r\n"
    )  # ... same request
    assert proxy.client_got() == b""
    proxy.from_upstream(OK)
    assert proxy.client_got().startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.usefixtures("fixed")
def test_a_post_is_not_sent_twice() -> None:
    proxy = ClientConnection()
    second_request_on_a_stale_connection(proxy, b"POST")
    assert len(proxy.connects) == 1
    assert proxy.client_got().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


@pytest.mark.usefixtures("fixed")
def test_it_is_retried_once_only() -> None:
    proxy = ClientConnection()
    second_request_on_a_stale_connection(proxy)
    assert len(proxy.connects) == 2
    proxy.upstream_closes()  # the new connection closes too: the destination is failing
    assert len(proxy.connects) == 2
    assert proxy.client_got().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"(reset)" in proxy.client_got()


@pytest.mark.usefixtures("fixed")
def test_a_new_connection_that_closes_is_a_failing_destination_not_retried() -> None:
    proxy = ClientConnection()
    proxy.request()
    proxy.upstream_closes()
    assert len(proxy.connects) == 1
    assert proxy.client_got().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_the_retry_reach_notices_a_rewritten_send(monkeypatch: pytest.MonkeyPatch) -> None:
    assert internals.stale_retry.check_stale_retry() is None
    monkeypatch.setattr(internals.stale_retry, "STOCK_RESEND", ("yield from self.send_request()",))
    problem = internals.stale_retry.check_stale_retry()
    assert problem is not None and "send_request" in problem
