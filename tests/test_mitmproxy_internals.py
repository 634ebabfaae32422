"""Each mitmproxy internal the runner relies on: present in the installed mitmproxy, and noticed
when an upgrade removes or changes it."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h11
import pytest
from mitmproxy import addonmanager, http, master, options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import events, mode_servers
from mitmproxy.proxy.layers.http import HttpLayer, HttpStream, _http1
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.test import taddons, tflow

from sidecar_dispatcher import _mitmproxy as internals
from sidecar_dispatcher._mitmproxy.speed import fast_hooks, flow_ids, header_lookups, terminal_lines
from sidecar_dispatcher.proxy.addon import Dispatcher
from sidecar_dispatcher.runner.serve import build_master, lean_addons
from sidecar_dispatcher.testing.loopback import free_port

from .proxy_layers import REQUEST, ClientConnection


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
    monkeypatch.setattr(
        internals.lean_master, "STOCK_LISTEN_CALL", "asyncio.start_server(other_call)"
    )
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


def test_the_refusal_names_the_declared_mitmproxy_and_what_mitmdump_still_needs() -> None:
    message = str(internals.InternalsChanged(["Example.internal: it is gone"]))
    assert "Install a mitmproxy release that has them, within mitmproxy" in message
    assert "(pyproject.toml)" in message
    # mitmdump is no way around it: the addon relies on the fixes there too.
    assert "public addon API" not in message
    assert "needs fewer of them (not the lean master's) but not none" in message


# --- fixes/ are fatal to the runner, speed/ cost only their shortcut


def test_each_reach_of_speed_serves_a_shortcut_and_no_reach_of_fixes_does() -> None:
    for reach in internals.REACHES:
        module = reach.check.__module__
        if ".speed." in module:
            assert reach.shortcut is not None, reach.name
        else:
            assert ".fixes." in module, (reach.name, module)
            assert reach.shortcut is None, reach.name


def test_every_shortcut_has_a_reach() -> None:
    assert {reach.shortcut for reach in internals.REACHES} - {None} == set(internals.Shortcut)


def build_runner(tmp_path: Path) -> master.Master:
    """The runner's master, built as `sidecar-dispatcher run` builds it; not running."""
    config = tmp_path / "config.yaml"
    config.write_text("key: environment\ndestination: http://127.0.0.1:1\n")

    async def build() -> master.Master:
        return build_master(
            [
                "mode=reverse:http://127.0.0.1:1@1",
                f"dispatcher_config={config}",
                "dispatcher_admin=",
                "dispatcher_watch=false",
                f"confdir={tmp_path / 'confdir'}",
            ],
            reuse_port=False,
        )

    return asyncio.run(build())


@pytest.fixture
def runner_master(tmp_path: Path) -> Iterator[Callable[[], master.Master]]:
    """Builds the runner's master on demand (after the test has broken what it breaks)."""
    built: list[master.Master] = []

    def build() -> master.Master:
        built.append(build_runner(tmp_path))
        return built[-1]

    yield build
    for lean in built:
        lean.addons.clear()  # their done hooks: the terminal log's handler leaves the root logger


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


def a_headers_get_of_mitmproxys_own(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """As if an upgrade gave Headers a get() of its own, which the runner must not replace."""

    def get(self: http.Headers, key: Any, default: Any = None) -> Any:
        return Mapping.get(self, key, default)

    monkeypatch.setattr(http.Headers, "get", get)
    return get


def test_all_shortcuts_are_usable_on_the_installed_mitmproxy_without_a_warning(
    lean: master.Master, caplog: pytest.LogCaptureFixture
) -> None:
    assert internals.usable_shortcuts(lean) == frozenset(internals.Shortcut)
    assert warnings_from(caplog) == []


def test_a_changed_header_lookup_costs_that_shortcut_only_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    runner_master: Callable[[], master.Master],
) -> None:
    own_get = a_headers_get_of_mitmproxys_own(monkeypatch)
    built = runner_master()
    (warning,) = warnings_from(caplog)
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING
    assert f"mitmproxy {internals.mitmproxy_version()} lacks or has changed internals" in message
    assert "the runner takes mitmproxy's own path for them" in message
    assert (
        "  - header look-ups: Headers.get / __contains__ (replaced: one scan, no KeyError): "
        "Headers has its own get() now; the runner would replace it"
    ) in message
    assert http.Headers.get is own_get  # not replaced: mitmproxy's own path
    assert not header_lookups.installed()
    # The other shortcuts are installed.
    assert fast_hooks.hook_table(built) is not None
    assert flow_ids.installed()
    dispatcher: Dispatcher = built.addons.get("dispatcher")
    assert isinstance(dispatcher.access_log.terminal, terminal_lines.TerminalLines)


def test_a_changed_hook_path_leaves_the_master_with_mitmproxys_hook_dispatch(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    runner_master: Callable[[], master.Master],
) -> None:
    piece = sorted(fast_hooks.STOCK_FINGERPRINTS)[0]
    monkeypatch.setitem(fast_hooks.STOCK_FINGERPRINTS, piece, "0" * 16)  # mitmproxy's changed
    built = runner_master()
    (warning,) = warnings_from(caplog)
    assert "  - fast hook path: mitmproxy's hook path" in warning.getMessage()
    assert f"{piece} is not the code the fast hook path reproduces" in warning.getMessage()
    assert fast_hooks.hook_table(built) is None
    assert "add" not in vars(built.addons)  # the addon manager is mitmproxy's, unwrapped
    assert header_lookups.installed()
    assert flow_ids.installed()


def test_several_changed_shortcuts_are_named_in_one_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    runner_master: Callable[[], master.Master],
) -> None:
    a_headers_get_of_mitmproxys_own(monkeypatch)
    other_ids = tuple(
        (owner, name, (*made, "uuid.uuid7()")) for owner, name, made in flow_ids.STOCK_USES
    )
    monkeypatch.setattr(flow_ids, "STOCK_USES", other_ids)  # mitmproxy makes its ids otherwise
    built = runner_master()
    (warning,) = warnings_from(caplog)
    assert "  - header look-ups: " in warning.getMessage()
    assert "  - pooled flow ids: " in warning.getMessage()
    assert not header_lookups.installed()
    assert not flow_ids.installed()
    assert fast_hooks.hook_table(built) is not None


def test_a_changed_internal_of_a_fix_still_stops_the_runner(
    monkeypatch: pytest.MonkeyPatch, runner_master: Callable[[], master.Master]
) -> None:
    monkeypatch.setattr(internals.trailers, "STOCK_READ_BODY", ("yield ReceiveTrailers(",))
    with pytest.raises(internals.InternalsChanged) as refused:
        runner_master()
    (problem,) = refused.value.problems
    assert problem.startswith("_http1.make_body_reader (wrapped: trailers dropped): ")


def reverse_instance(port: int) -> mode_servers.ReverseInstance:
    mode = ReverseMode.parse(f"reverse:http://127.0.0.1:1@{port}")
    return mode_servers.ReverseInstance(mode, manager=None)


async def close_all(servers: list[Any]) -> None:
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.spawns
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


# --- the upstream timeout's reaches: noticed when mitmproxy changes them


@pytest.mark.parametrize(
    ("constant", "reach"),
    [
        ("STOCK_INJECT_EVENT", "Proxyserver.inject_event()"),
        ("STOCK_LAYER_PAUSE", "HttpLayer._handle_event"),
        ("STOCK_HTTP1_CLIENT_SEND", "HttpStream.handle_protocol_error"),
        ("STOCK_HTTP2_CONNECTION", "HttpStream.handle_protocol_error"),
        ("STOCK_OPEN_CONNECTION", "ConnectionHandler.open_connection"),
        ("STOCK_CLOSE_CONNECTION", "ConnectionHandler.open_connection"),
    ],
)
def test_a_rewritten_stock_fragment_is_noticed_and_named(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch, constant: str, reach: str
) -> None:
    fragments = getattr(internals.overdue_checks, constant)
    monkeypatch.setattr(internals.overdue_checks, constant, (*fragments, "self.something_else()"))
    (problem,) = problems_naming(lean, reach)
    assert problem.endswith("no longer has `self.something_else()`")


@pytest.mark.parametrize(
    ("table", "method", "reach"),
    [
        ("STOCK_HTTP_LAYER", "get_connection", "HttpLayer._handle_event"),
        ("STOCK_HTTP_STREAM", "state_consume_request_body", "HttpStream.handle_protocol_error"),
    ],
)
def test_a_rewritten_http_layer_method_is_noticed_and_named(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch, table: str, method: str, reach: str
) -> None:
    fragments = dict(getattr(internals.overdue_checks, table))
    fragments[method] = (*fragments[method], "yield Other()")
    monkeypatch.setattr(internals.overdue_checks, table, fragments)
    (problem,) = problems_naming(lean, reach)
    assert problem.endswith(f"{method} no longer has `yield Other()`")


def test_the_fragments_ignore_whitespace_but_keep_their_order() -> None:
    def example() -> dict[str, int]:
        values = {
            "first": 1,
        }
        values["second"] = 2
        return values

    in_order = ('values = {"first": 1,}', 'values["second"] = 2')
    assert internals.source_lacks(example, in_order) is None
    assert internals.source_lacks(example, in_order[::-1]) is not None


def test_a_replaced_stream_method_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    def handle_protocol_error(self: object, event: object) -> Iterator[object]:
        yield from ()

    monkeypatch.setattr(HttpStream, "handle_protocol_error", handle_protocol_error)
    problem = internals._check_http_stream(None)  # type: ignore[arg-type]
    assert problem == "HttpStream.handle_protocol_error is already replaced (or mitmproxy moved it)"


def test_a_layer_method_with_another_signature_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    stock = internals.stock_method(HttpLayer._handle_event)

    def _handle_event(self: object, event: object, extra: object) -> Iterator[object]:
        yield from ()

    _handle_event.__qualname__ = stock.__qualname__
    monkeypatch.setattr(HttpLayer, "_handle_event", _handle_event)
    problem = internals._check_http_layer(None)  # type: ignore[arg-type]
    assert problem is not None
    assert "is not (self, event)" in problem


def test_a_method_that_stopped_yielding_commands_is_noticed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stock = internals.stock_method(HttpStream.handle_protocol_error)

    def handle_protocol_error(self: object, event: object) -> None:
        pass

    handle_protocol_error.__qualname__ = stock.__qualname__
    monkeypatch.setattr(HttpStream, "handle_protocol_error", handle_protocol_error)
    problem = internals._check_http_stream(None)  # type: ignore[arg-type]
    assert problem == "HttpStream.handle_protocol_error is no longer a generator of commands"


def test_the_wrappers_are_installed_once_and_keep_the_stock_methods_underneath(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stock_layer = internals.stock_method(HttpLayer._handle_event)
    stock_stream = internals.stock_method(HttpStream.handle_protocol_error)
    monkeypatch.setattr(HttpLayer, "_handle_event", stock_layer)
    monkeypatch.setattr(HttpStream, "handle_protocol_error", stock_stream)
    internals.answer_overdue_flows()
    wrapped = HttpLayer._handle_event, HttpStream.handle_protocol_error
    internals.answer_overdue_flows()
    assert (HttpLayer._handle_event, HttpStream.handle_protocol_error) == wrapped
    assert internals.stock_method(HttpLayer._handle_event) is stock_layer
    assert internals.stock_method(HttpStream.handle_protocol_error) is stock_stream
    assert internals._check_http_layer(None) is None  # type: ignore[arg-type]
    assert internals._check_http_stream(None) is None  # type: ignore[arg-type]


# --- the upstream timeout's reaches at work: an HttpLayer driven event by event (proxy_layers.py)


@pytest.fixture
def wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """mitmproxy's HTTP layer with the upstream timeout's wrappers (undone after the test)."""
    monkeypatch.setattr(HttpLayer, "_handle_event", HttpLayer._handle_event)
    monkeypatch.setattr(HttpStream, "handle_protocol_error", HttpStream.handle_protocol_error)
    internals.answer_overdue_flows()


@pytest.fixture
def stock(monkeypatch: pytest.MonkeyPatch) -> None:
    """mitmproxy's HTTP layer as it ships."""
    monkeypatch.setattr(HttpLayer, "_handle_event", internals.stock_method(HttpLayer._handle_event))
    monkeypatch.setattr(
        HttpStream,
        "handle_protocol_error",
        internals.stock_method(HttpStream.handle_protocol_error),
    )


@pytest.mark.usefixtures("stock")
def test_stock_mitmproxy_keeps_the_client_waiting_and_cannot_be_told_otherwise() -> None:
    proxy = ClientConnection()
    flow = proxy.request()
    assert proxy.sent[proxy.upstream].startswith(b"GET /slow HTTP/1.1\r\n")
    assert proxy.client_got() == b""  # until the destination answers, or 600 s of silence
    # Its routing of injected messages does reach the stream, which refuses anything but HTTP.
    with pytest.raises(AssertionError, match=r"Unexpected event type at HttpStream\._handle_event"):
        proxy.overdue(flow)


@pytest.mark.usefixtures("wrapped")
def test_an_overdue_flow_is_answered_and_its_upstream_connection_closed() -> None:
    proxy = ClientConnection()
    flow = proxy.request()
    answer = proxy.overdue(flow)
    assert proxy.deliveries == [internals.Delivery.ANSWERING]
    assert proxy.closed == [proxy.upstream]
    assert proxy.client_got().startswith(b"HTTP/1.1 504 Gateway Time-out\r\n")
    assert proxy.client_got().endswith(b"\r\n\r\ntoo slow\n")
    assert flow.response is answer
    assert flow.error is None
    assert proxy.hooks == ["requestheaders", "request", "responseheaders", "response"]
    assert proxy.client not in proxy.closed  # HTTP/1.1 keep-alive goes on


@pytest.mark.usefixtures("wrapped")
def test_the_client_connection_serves_its_next_request_after_an_overdue_answer() -> None:
    proxy = ClientConnection()
    proxy.overdue(proxy.request())
    proxy.handle(events.ConnectionClosed(proxy.upstream))  # the closed connection reports in
    answered = len(proxy.client_got())
    second = proxy.request(b"GET /fast HTTP/1.1\r\nHost: sidecar.test\r\n\r\n")
    assert second is not proxy.flows[0]
    assert proxy.upstream is not proxy.connects[0].connection  # a new upstream connection
    proxy.from_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert proxy.client_got()[answered:].startswith(b"HTTP/1.1 200 OK\r\n")
    assert second.response is not None and second.response.status_code == 200


@pytest.mark.usefixtures("wrapped")
def test_what_the_destination_sends_while_the_answers_hooks_run_is_dropped() -> None:
    proxy = ClientConnection()
    flow = proxy.request()
    proxy.held_hooks = []  # the responseheaders and response hooks take their time
    proxy.overdue(flow)
    proxy.from_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlate!")
    proxy.handle(events.ConnectionClosed(proxy.upstream))
    assert proxy.complete_held_hook() == "responseheaders"
    assert proxy.complete_held_hook() == "response"
    assert proxy.held_hooks == []
    assert flow.response is not None and flow.response.status_code == 504
    assert proxy.client_got().count(b"HTTP/1.1") == 1
    assert b"late!" not in proxy.client_got()
    assert proxy.hooks.count("error") == 0


@pytest.mark.usefixtures("wrapped")
def test_response_headers_that_came_first_win() -> None:
    proxy = ClientConnection()
    flow = proxy.request()
    proxy.from_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    proxy.overdue(flow)
    assert proxy.deliveries == [internals.Delivery.NOTHING_TO_DO]
    assert flow.response is not None and flow.response.status_code == 200
    assert proxy.closed == []


@pytest.mark.usefixtures("wrapped")
def test_other_upstream_failures_keep_mitmproxys_own_answer() -> None:
    answers = []
    for fixture in (internals.stock_method, lambda method: method):
        with pytest.MonkeyPatch.context() as patch:
            handler = fixture(HttpStream.handle_protocol_error)
            patch.setattr(HttpStream, "handle_protocol_error", handler)
            proxy = ClientConnection()
            flow = proxy.request()
            proxy.handle(events.ConnectionClosed(proxy.upstream))  # the destination hung up
            assert flow.error is not None and flow.response is None
            answers.append((proxy.client_got(), proxy.hooks, flow.error.msg))
    stock_answer, wrapped_answer = answers
    assert wrapped_answer == stock_answer
    assert stock_answer[0].startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert stock_answer[1][-1] == "error"


@pytest.mark.usefixtures("wrapped")
def test_an_overdue_flow_whose_connect_runs_has_it_cancelled_then_is_answered() -> None:
    proxy = ClientConnection(hold_connects=True)
    flow = proxy.request()
    connect = proxy.connects[-1]
    connect.connection.timestamp_start = time.time()  # inside asyncio.open_connection
    proxy.overdue(flow)
    assert proxy.deliveries == [internals.Delivery.CONNECT_CANCELLED]
    assert proxy.closed == [connect.connection]
    assert proxy.client_got() == b""
    # What ConnectionHandler.open_connection reports once the cancel lands:
    proxy.handle(events.OpenConnectionCompleted(connect, "connection cancelled"))
    assert proxy.client_got().startswith(b"HTTP/1.1 504 Gateway Time-out\r\n")
    assert flow.response is not None and flow.error is None
    assert proxy.hooks[-2:] == ["responseheaders", "response"]


@pytest.mark.usefixtures("wrapped")
def test_a_connect_not_yet_started_is_left_alone_and_asked_about_again() -> None:
    proxy = ClientConnection(hold_connects=True)
    flow = proxy.request()  # waiting for the server_connect hook or a free connection slot
    proxy.overdue(flow)
    assert proxy.deliveries == [internals.Delivery.NOT_YET]
    assert proxy.closed == []
    proxy.handle(proxy.connected(proxy.connects[-1]))  # connected: the request goes up
    proxy.overdue(flow)
    assert proxy.deliveries[-1] == internals.Delivery.ANSWERING
    assert proxy.client_got().startswith(b"HTTP/1.1 504 Gateway Time-out\r\n")
    assert proxy.closed == [proxy.upstream]


@pytest.mark.usefixtures("wrapped")
def test_a_flow_held_by_a_hook_is_asked_about_again() -> None:
    proxy = ClientConnection()
    proxy.held_hooks = []
    proxy.handle(events.DataReceived(proxy.client, REQUEST))
    assert proxy.complete_held_hook() == "requestheaders"
    flow = proxy.flows[-1]  # its `request` hook is held (mitmweb's intercept, say)
    proxy.overdue(flow)
    assert proxy.deliveries == [internals.Delivery.NOT_YET]
    assert proxy.complete_held_hook() == "request"
    proxy.overdue(flow)
    assert proxy.deliveries[-1] == internals.Delivery.ANSWERING


@pytest.mark.usefixtures("wrapped")
def test_an_http2_destination_has_only_the_overdue_stream_reset() -> None:
    proxy = ClientConnection(upstream_alpn=b"h2")
    flow = proxy.request()
    proxy.overdue(flow)
    assert proxy.closed == []  # other streams may share the connection
    destination = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    seen = destination.receive_data(bytes(proxy.sent[proxy.upstream]))
    (reset,) = [event for event in seen if isinstance(event, h2.events.StreamReset)]
    assert reset.error_code == h2.errors.ErrorCodes.CANCEL
    assert proxy.client_got().startswith(b"HTTP/1.1 504 Gateway Time-out\r\n")


def test_an_overdue_event_for_a_gone_connection_is_not_injected() -> None:
    flow = tflow.tflow()
    with taddons.context(Proxyserver()) as tctx:
        event = internals.ResponseHeadersOverdue(flow, http.Response.make(504), "", print)
        assert internals.inject_overdue(tctx.master, event) is False
    with taddons.context() as tctx:  # nothing serves at all
        assert internals.inject_overdue(tctx.master, event) is False


def h2_request(path: str) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"sidecar.test"),
        (b":path", path.encode()),
    ]


@pytest.mark.usefixtures("wrapped")
def test_a_connect_two_http2_streams_wait_for_is_cancelled_once_both_are_overdue() -> None:
    proxy = ClientConnection(hold_connects=True, client_alpn=b"h2")
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, h2_request("/one"), end_stream=True)
    client.send_headers(3, h2_request("/two"), end_stream=True)
    proxy.handle(events.DataReceived(proxy.client, client.data_to_send()))
    first, second = proxy.flows
    (connect,) = proxy.connects  # both streams wait for this one
    connect.connection.timestamp_start = time.time()
    proxy.overdue(first)
    assert proxy.deliveries == [internals.Delivery.NOT_YET]  # the other is still within time
    assert proxy.closed == []
    proxy.overdue(second)
    assert proxy.deliveries[-1] == internals.Delivery.CONNECT_CANCELLED
    assert proxy.closed == [connect.connection]
    proxy.handle(events.OpenConnectionCompleted(connect, "connection cancelled"))
    answers = {
        event.stream_id: dict(event.headers)[b":status"]
        for event in client.receive_data(proxy.client_got())
        if isinstance(event, h2.events.ResponseReceived)
    }
    assert answers == {1: b"504", 3: b"504"}
    assert first.error is None and second.error is None


def test_the_flow_format_diff_reads_is_the_installed_one() -> None:
    assert internals.flow_file.check_flow_format() is None


def test_a_new_flow_format_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals.flow_file, "KNOWN_FORMAT_VERSION", 20)
    problem = internals.flow_file.check_flow_format()
    assert problem is not None and problem.startswith("flow format version 21, not 20")


def test_the_body_readers_still_refuse_trailers_so_dropping_them_is_needed() -> None:
    assert internals.trailers.check_trailers() is None


def test_trailers_implemented_by_mitmproxy_would_be_noticed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(internals.trailers, "STOCK_READ_BODY", ("yield ReceiveTrailers(",))
    problem = internals.trailers.check_trailers()
    assert problem is not None and "no longer has `yield ReceiveTrailers(`" in problem


def test_a_chunked_body_ending_with_trailers_ends_without_them() -> None:
    buffer = _http1.ReceiveBuffer()  # type: ignore[attr-defined]  # what mitmproxy reads into
    buffer += b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\n\r\n"
    chunked = _http1.ChunkedReader()  # type: ignore[attr-defined]
    reader = internals.trailers.TrailerDroppingReader(chunked)
    events = [reader(buffer), reader(buffer)]
    assert isinstance(events[0], h11.Data) and bytes(events[0].data) == b"abc"
    assert isinstance(events[1], h11.EndOfMessage) and list(events[1].headers) == []
