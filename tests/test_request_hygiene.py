"""Malformed header values are refused; hop-by-hop headers do not pass the sidecar."""

from __future__ import annotations

import pytest

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
    for name in ("Connection", "Keep-Alive", "X-Custom", "TE", "Proxy-Authorization", "Upgrade"):
        assert name not in headers, name
    assert "Proxy-Connection" not in headers


def test_a_websocket_handshake_keeps_its_upgrade(harness: Harness) -> None:
    flow = make_flow(("Connection", "Upgrade"), ("Upgrade", "websocket"))
    headers = harness.dispatch(flow).request.headers
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "Upgrade"


def test_te_trailers_passes_for_grpc(harness: Harness) -> None:
    headers = harness.dispatch(make_flow(("TE", "trailers"))).request.headers
    assert headers["TE"] == "trailers"
