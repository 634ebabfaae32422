"""Each mitmproxy internal the runner relies on: present in the installed mitmproxy, and noticed
when an upgrade removes or changes it."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from mitmproxy import addonmanager, master, options
from mitmproxy.proxy import mode_servers
from mitmproxy.proxy.mode_specs import ReverseMode

from sidecar_dispatcher import mitmproxy_internals as internals
from sidecar_dispatcher.addon import Dispatcher
from sidecar_dispatcher.runner import build_master, lean_addons
from sidecar_dispatcher.testing.loopback import free_port


@pytest.fixture
def lean() -> Iterator[master.Master]:
    """The runner's master with its addons, not configured and not running."""
    loop = asyncio.new_event_loop()
    try:
        built = master.Master(options.Options(), event_loop=loop, with_termlog=False)
        legacy_log_events = built._legacy_log_events  # a handler on the root logger
        built.addons.add(*lean_addons(), Dispatcher())
        yield built
    finally:
        legacy_log_events.uninstall()
        loop.close()


def problems_naming(lean: master.Master, name: str) -> list[str]:
    return [problem for problem in internals.self_check(lean) if problem.startswith(name)]


def test_every_internal_holds_in_the_installed_mitmproxy(lean: master.Master) -> None:
    assert internals.self_check(lean) == []


def test_a_missing_legacy_log_events_attribute_is_noticed(lean: master.Master) -> None:
    del lean._legacy_log_events
    assert problems_naming(lean, "Master._legacy_log_events") == [
        "Master._legacy_log_events.uninstall(): the master has no _legacy_log_events attribute"
    ]


def test_dropping_legacy_log_events_stops_add_log_events(lean: master.Master) -> None:
    handler = lean._legacy_log_events
    assert handler in logging.getLogger().handlers  # every record becomes an add_log event
    internals.drop_legacy_log_events(lean)
    assert handler not in logging.getLogger().handlers


def test_a_trigger_that_became_async_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def trigger(self: addonmanager.AddonManager, event: Any) -> None:
        pass

    monkeypatch.setattr(addonmanager.AddonManager, "trigger", trigger)
    assert problems_naming(lean, "AddonManager.trigger()") == [
        "AddonManager.trigger(): AddonManager.trigger() is a coroutine now; "
        "the runner calls it synchronously"
    ]


def test_a_removed_trigger_is_noticed(lean: master.Master, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(addonmanager.AddonManager, "trigger")
    assert len(problems_naming(lean, "AddonManager.trigger()")) == 1


def test_a_reverse_listen_with_another_signature_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def listen(self: object, host: str, port: int, backlog: int) -> list[object]:
        return []

    monkeypatch.setattr(mode_servers.ReverseInstance, "listen", listen)
    (problem,) = problems_naming(lean, "ReverseInstance.listen")
    assert "is not (self, host, port)" in problem


def test_a_reverse_listen_that_no_longer_calls_start_server_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(internals, "STOCK_LISTEN_CALL", "asyncio.start_server(other_call)")
    (problem,) = problems_naming(lean, "ReverseInstance.listen")
    assert "no longer calls asyncio.start_server(other_call)" in problem


def test_a_master_without_proxyserver_is_noticed() -> None:
    loop = asyncio.new_event_loop()
    try:
        bare = master.Master(options.Options(), event_loop=loop)
        assert problems_naming(bare, "Proxyserver") == [
            "Proxyserver.servers.update() and .connections: no proxyserver addon is loaded"
        ]
        bare._legacy_log_events.uninstall()
    finally:
        loop.close()


def test_the_runner_refuses_to_build_naming_the_internal_and_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = internals.Reach("Example.internal", lambda _lean: "it is gone")
    monkeypatch.setattr(internals, "REACHES", (*internals.REACHES, broken))

    async def build() -> None:
        build_master(["mode=reverse:http://127.0.0.1:1@1"], reuse_port=False)

    with pytest.raises(internals.InternalsChanged) as refused:
        asyncio.run(build())
    message = str(refused.value)
    assert f"mitmproxy {internals.mitmproxy_version()} lacks internals" in message
    assert "  - Example.internal: it is gone" in message


def reverse_instance(port: int) -> mode_servers.ReverseInstance:
    mode = ReverseMode.parse(f"reverse:http://127.0.0.1:1@{port}")
    return mode_servers.ReverseInstance(mode, manager=None)


async def close_all(servers: list[Any]) -> None:
    for server in servers:
        server.close()
        await server.wait_closed()


def test_shared_listening_port_lets_two_listeners_bind_one_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mode_servers.ReverseInstance, "listen", mode_servers.ReverseInstance.listen)
    port = free_port()

    async def scenario() -> None:
        first = await reverse_instance(port).listen("127.0.0.1", port)
        with pytest.raises(OSError) as stock_refused:  # mitmproxy's own listen: one per port
            await reverse_instance(port).listen("127.0.0.1", port)
        assert stock_refused.value.errno == errno.EADDRINUSE
        await close_all(first)

        internals.share_listening_port()
        first = await reverse_instance(port).listen("127.0.0.1", port)
        second = await reverse_instance(port).listen("127.0.0.1", port)
        for server in (*first, *second):
            assert isinstance(server, asyncio.Server)
            sock = server.sockets[0]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert sock.getsockname()[1] == port
        await close_all([*first, *second])

    asyncio.run(scenario())


def test_shared_listening_port_refuses_port_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mode_servers.ReverseInstance, "listen", mode_servers.ReverseInstance.listen)
    internals.share_listening_port()
    with pytest.raises(OSError, match="needs a fixed port"):
        asyncio.run(reverse_instance(0).listen("127.0.0.1", 0))


def test_a_new_master_has_no_open_connections_and_stops_listening(lean: master.Master) -> None:
    assert internals.open_connections(lean) == 0
    lean.event_loop.run_until_complete(internals.stop_listening(lean))
    assert internals.open_connections(lean) == 0
