"""The admin listener on its own: what each path answers, and addresses it refuses."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sidecar_dispatcher.observe.admin import (
    AdminAddressError,
    AdminServer,
    AdminStatus,
    Readiness,
    bind_admin_socket,
    parse_admin_address,
)
from sidecar_dispatcher.testing.loopback import free_port


def exchange(server: AdminServer, raw: bytes) -> bytes:
    """Send `raw` to a started server; everything it answers until it closes."""

    async def scenario() -> bytes:
        await server.start()
        try:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(raw)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return answer
        finally:
            await server.stop()

    return asyncio.run(scenario())


def server_with(ready: bool = True, healthy: bool = True) -> AdminServer:
    status = AdminStatus(
        metrics=lambda: b"# HELP x y\n", ready=lambda: ready, healthy=lambda: healthy
    )
    return AdminServer(bind_admin_socket(f"127.0.0.1:{free_port()}"), status)


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode()


@pytest.mark.spawns
@pytest.mark.parametrize(
    ("path", "ready", "healthy", "status_line", "body"),
    [
        ("/metrics", True, True, b"HTTP/1.1 200 OK", b"# HELP x y\n"),
        ("/metrics?name[]=x", True, True, b"HTTP/1.1 200 OK", b"# HELP x y\n"),
        ("/healthz", True, True, b"HTTP/1.1 200 OK", b"ok\n"),
        ("/healthz", True, False, b"HTTP/1.1 503 Service Unavailable", b"unhealthy\n"),
        ("/readyz", True, True, b"HTTP/1.1 200 OK", b"ready\n"),
        ("/readyz", False, True, b"HTTP/1.1 503 Service Unavailable", b"not ready\n"),
        ("/", True, True, b"HTTP/1.1 404 Not Found", b"not found: "),
        ("/metrics/../admin", True, True, b"HTTP/1.1 404 Not Found", b"not found: "),
    ],
)
def test_each_path_answers_with_its_status(
    path: str, ready: bool, healthy: bool, status_line: bytes, body: bytes
) -> None:
    answer = exchange(server_with(ready, healthy), get(path))
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == status_line
    assert b"Connection: close" in head
    assert content.startswith(body)
    assert f"Content-Length: {len(content)}".encode() in head


@pytest.mark.spawns
def test_metrics_are_served_as_prometheus_text() -> None:
    head = exchange(server_with(), get("/metrics")).partition(b"\r\n\r\n")[0]
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head


@pytest.mark.spawns
def test_head_gets_the_headers_without_a_body() -> None:
    answer = exchange(server_with(), get("/readyz", "HEAD"))
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(b"\r\n\r\n")


@pytest.mark.spawns
def test_other_methods_are_refused() -> None:
    assert exchange(server_with(), get("/readyz", "POST")).startswith(b"HTTP/1.1 405 ")


@pytest.mark.spawns
def test_a_request_head_that_never_ends_is_cut_off() -> None:
    assert exchange(server_with(), b"GET /" + b"a" * 20_000) == b""


@pytest.mark.spawns
def test_a_second_listener_on_the_same_address_is_refused_with_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    first = bind_admin_socket(address)
    try:
        with pytest.raises(
            AdminAddressError, match=rf"cannot listen on the admin address {address}"
        ):
            bind_admin_socket(address)
    finally:
        first.close()


@pytest.mark.parametrize("text", ["9901", "localhost", "127.0.0.1:", "127.0.0.1:99999", ":9901"])
def test_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(AdminAddressError, match="is not HOST:PORT"):
        parse_admin_address(text)


@pytest.mark.spawns
def test_ipv6_addresses_are_bracketed() -> None:
    assert parse_admin_address("[::1]:9901") == ("::1", 9901)
    try:
        sock = bind_admin_socket(f"[::1]:{free_port()}")
    except AdminAddressError:
        pytest.skip("no IPv6 loopback here")
    assert sock.family == socket.AF_INET6
    sock.close()


def test_readiness_needs_config_and_listener_and_ends_with_draining() -> None:
    seen: list[bool] = []
    readiness = Readiness(on_change=seen.append)
    readiness.update(config_loaded=True)
    readiness.update(listening=True)
    readiness.update(draining=True)
    assert seen == [False, True, False]
    assert not readiness.ready


@pytest.mark.spawns
def test_port_zero_picks_a_free_port() -> None:
    sock = bind_admin_socket("127.0.0.1:0")
    assert sock.getsockname()[1] > 0
    sock.close()
