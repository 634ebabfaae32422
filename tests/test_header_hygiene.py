"""Malformed header values are refused or repaired; hop-by-hop headers do not pass the sidecar."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

from sidecar_dispatcher.proxy.header_hygiene import strip_hop_by_hop

from .flows import Harness, body, make_flow


@pytest.mark.parametrize(
    "value", ["dev\r\n x-injected: 1", "dev\rother", "dev\x00", "a\nb"], ids=repr
)
def test_a_value_with_cr_lf_or_nul_is_refused_with_400(harness: Harness, value: str) -> None:
    flow = harness.dispatch(make_flow(("X-Note", value), ("environment", "dev")))
    assert flow.response is not None
    assert flow.response.status_code == 400
    assert b"header X-Note is malformed" in body(flow)
    assert flow.request.host == "reverse.target"  # never dispatched


def test_hop_by_hop_headers_are_dropped_before_the_patches(harness: Harness) -> None:
    flow = make_flow(
        ("environment", "token"),
        ("Connection", "keep-alive, Authorization, X-Custom"),
        ("Keep-Alive", "timeout=5"),
        ("X-Custom", "hi"),
        ("TE", "gzip"),
        ("Proxy-Authorization", "Basic x"),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "h2c"),
    )
    headers = harness.dispatch(flow).request.headers
    assert headers.get_all("Authorization") == ["Bearer s3cret"]  # the patch, not stripped
    for name in ("Keep-Alive", "X-Custom", "TE", "Proxy-Authorization", "Upgrade"):
        assert name not in headers, name
    assert "Proxy-Connection" not in headers
    # mitmproxy decides from this very header whether to keep the client's connection open
    assert headers.get_all("Connection") == ["keep-alive"]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("close", ["close"]), ("Close, X-Custom", ["close"]), ("X-Custom", [])],
)
def test_connection_keeps_only_the_tokens_mitmproxy_acts_on(
    harness: Harness, sent: str, kept: list[str]
) -> None:
    flow = make_flow(("Connection", sent), ("X-Custom", "hi"))
    headers = harness.dispatch(flow).request.headers
    assert headers.get_all("Connection") == kept
    assert ("X-Custom" in headers) == ("x-custom" not in sent.lower())  # named: hop-by-hop


def test_a_websocket_handshake_keeps_its_upgrade(harness: Harness) -> None:
    flow = make_flow(("Connection", "Upgrade"), ("Upgrade", "websocket"))
    headers = harness.dispatch(flow).request.headers
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"].lower() == "upgrade"


def test_te_trailers_passes_for_grpc(harness: Harness) -> None:
    headers = harness.dispatch(make_flow(("TE", "trailers"))).request.headers
    assert headers["TE"] == "trailers"


def respond(harness: Harness, status: int, *headers: tuple[str, str]) -> http.Headers:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    flow.response = http.Response.make(status, b"upstream body")
    for name, value in headers:
        flow.response.headers.add(name, value)
    harness.hook(HttpResponseHeadersHook(flow))
    return flow.response.headers


def test_hop_by_hop_response_headers_are_dropped(harness: Harness) -> None:
    headers = respond(
        harness,
        200,
        ("Connection", "close, X-Internal"),
        ("X-Internal", "10.0.0.7"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authenticate", "Basic"),
        ("Upgrade", "h2c"),
        ("X-Kept", "yes"),
    )
    assert headers.get_all("Connection") == ["close"]  # mitmproxy closes the upstream on it
    for name in ("X-Internal", "Keep-Alive", "Proxy-Authenticate", "Upgrade"):
        assert name not in headers, name
    assert headers["X-Kept"] == "yes"


def test_a_101_keeps_its_upgrade(harness: Harness) -> None:
    headers = respond(harness, 101, ("Connection", "Upgrade"), ("Upgrade", "websocket"))
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "upgrade"


@pytest.mark.parametrize(
    ("value", "repaired"),
    [("a\r\n  b", "a b"), ("a\n\tb", "a b"), ("a\rb", "a b"), ("a\x00b", "a b")],
    ids=["obs-fold", "lf-fold", "bare-cr", "nul"],
)
def test_response_values_with_cr_lf_or_nul_become_one_line(
    harness: Harness, value: str, repaired: str
) -> None:
    headers = respond(harness, 200, ("X-Note", value), ("X-Other", "fine"))
    assert headers.get_all("X-Note") == [repaired]
    assert headers["X-Other"] == "fine"


@pytest.mark.parametrize(
    ("fields", "left"),
    [
        (
            [("Connection", "Keep-Alive")],
            [("Connection", "Keep-Alive")],
        ),  # as it was: nothing to do
        ([("KEEP-ALIVE", "timeout=5"), ("X-Kept", "1")], [("X-Kept", "1")]),
        ([("Proxy-Authorization", "x")], []),
        ([("Connection", "close"), ("connection", "close")], [("Connection", "close")]),
        ([("Connection", "keep-alive,")], [("Connection", "keep-alive")]),
    ],
    ids=["usual", "upper-case-name", "proxy-star", "repeated", "trailing-comma"],
)
def test_the_quick_check_lets_only_messages_with_nothing_to_strip_pass_unchanged(
    fields: list[tuple[str, str]], left: list[tuple[str, str]]
) -> None:
    headers = http.Headers()
    for name, value in fields:
        headers.add(name, value)
    strip_hop_by_hop(headers, upgrade=False)
    assert list(headers.items(multi=True)) == left
