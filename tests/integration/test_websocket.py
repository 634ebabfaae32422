"""End to end: WebSocket upgrades dispatched by their key header, messages both ways.

The upgrade is an ordinary HTTP/1.1 request, so the dispatcher's `requestheaders` hook routes
and patches it like any other; mitmproxy then relays the WebSocket frames to that destination.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection, connect

from sidecar_dispatcher.testing.configs import dispatch_config

from .conftest import SaveConfig
from .processes import Sidecar, binary_payload
from .protocol_servers import WebSocketEcho


@pytest.fixture(scope="module")
def default_ws() -> Iterator[WebSocketEcho]:
    with WebSocketEcho("default") as server:
        yield server


@pytest.fixture(scope="module")
def dev_ws() -> Iterator[WebSocketEcho]:
    with WebSocketEcho("dev") as server:
        yield server


@pytest.fixture(scope="module")
def ws_sidecar(
    save_config: SaveConfig, default_ws: WebSocketEcho, dev_ws: WebSocketEcho
) -> Iterator[Sidecar]:
    config = save_config(dispatch_config(default_ws.url, dev=f"{dev_ws.url}/base"))
    with Sidecar(default_ws.url, config=config) as process:
        yield process


def open_socket(sidecar: Sidecar, path: str, headers: dict[str, str]) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{sidecar.port}{path}",
        additional_headers=headers,
        open_timeout=10,
        close_timeout=5,
    )


def test_upgrade_with_key_goes_to_its_destination_with_patches(
    ws_sidecar: Sidecar, dev_ws: WebSocketEcho
) -> None:
    with open_socket(ws_sidecar, "/chat?room=1", {"environment": "dev"}) as socket:
        assert socket.recv(timeout=10) == "hello from dev"
    upgrade = dev_ws.upgrades[-1]
    assert upgrade.path == "/base/chat?room=1"
    assert upgrade.all("Host") == ["example.com"]
    assert upgrade.all("dispatched") == ["true"]
    assert upgrade.all("environment") == ["dev"]
    assert [value.lower() for value in upgrade.all("Upgrade")] == ["websocket"]


def test_text_and_binary_messages_flow_both_ways(ws_sidecar: Sidecar) -> None:
    binary = binary_payload(256 * 1024)  # every byte value, NUL, CR and LF included
    with open_socket(ws_sidecar, "/chat", {"environment": "dev"}) as socket:
        assert socket.recv(timeout=10) == "hello from dev"  # server to client, unprompted
        for round_trip in range(3):
            socket.send(f"ping {round_trip} ✓")
            assert socket.recv(timeout=10) == f"ping {round_trip} ✓"
            socket.send(binary)
            echoed = socket.recv(timeout=10)
            assert isinstance(echoed, bytes)
            assert echoed == binary


def test_upgrade_without_key_goes_to_default_unpatched(
    ws_sidecar: Sidecar, default_ws: WebSocketEcho
) -> None:
    with open_socket(ws_sidecar, "/chat", {}) as socket:
        assert socket.recv(timeout=10) == "hello from default"
        socket.send("still there?")
        assert socket.recv(timeout=10) == "still there?"
    upgrade = default_ws.upgrades[-1]
    assert upgrade.path == "/chat"
    assert upgrade.all("Host") == [f"127.0.0.1:{default_ws.port}"]
    assert upgrade.all("dispatched") == []


def test_upgrade_is_logged_like_any_request(ws_sidecar: Sidecar, dev_ws: WebSocketEcho) -> None:
    with open_socket(ws_sidecar, "/logged", {"environment": "dev"}) as socket:
        socket.recv(timeout=10)
    logs = ws_sidecar.wait_for_log("GET /base/logged")
    line = next(line for line in logs.splitlines() if "GET /base/logged" in line)
    assert f"dev → {dev_ws.url}/base (environment: dev) GET /base/logged" in line
    assert re.search(r"patched=\[Host, X-Forwarded-For, dispatched\] 101 \d+\.\dms$", line), line
