"""The runner's fast hook path behaves as mitmproxy's own: same handlers, order, errors, halts.

Each scenario runs twice through a real `ProxyConnectionHandler` and mitmproxy's layer machinery
(pausing on blocking hooks, resuming on `HookCompleted`): once with mitmproxy's path (a master
without the hook table) and once with the fast path, and what the addons saw, what the layers
heard back and what was logged must be the same.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import io
import logging
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from mitmproxy import connection, exceptions, flow, hooks, http, log, master, options
from mitmproxy.addons import next_layer, proxyserver
from mitmproxy.proxy import commands, events, layer, mode_servers, server
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import (  # type: ignore[attr-defined]  # not in its __all__
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.script import concurrent
from mitmproxy.test import tflow
from mitmproxy.utils import asyncio_utils

from sidecar_dispatcher import _mitmproxy as internals
from sidecar_dispatcher._mitmproxy.speed import fast_hooks, flow_ids, header_lookups, terminal_lines
from sidecar_dispatcher.observe.access_log import (
    FLUSH_DELAY,
    FLUSH_SIZE,
    BatchedOutput,
    write_stdout_line,
)
from sidecar_dispatcher.proxy.addon import Dispatcher
from sidecar_dispatcher.runner.serve import build_master, lean_addons
from sidecar_dispatcher.testing.loopback import free_port

HTTP_HOOKS = (HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook)

Action = Callable[[Any], object]
Call = tuple[str, ...]  # addon, hook, flow


class Part:
    """An addon that records every hook it gets and does what `actions` says on some."""

    def __init__(
        self,
        name: str,
        calls: list[Call],
        actions: dict[str, Action] | None = None,
        addons: tuple[object, ...] = (),
    ) -> None:
        self.name = name
        self.calls = calls
        self.actions = actions or {}
        if addons:
            self.addons = list(addons)

    def _hook(self, hook: str, data: Any) -> object:
        subject = data[0] if isinstance(data, list) else data  # update: a list of flows
        self.calls.append((self.name, hook, getattr(subject, "comment", "")))
        action = self.actions.get(hook)
        return action(data) if action else None

    def requestheaders(self, data: Any) -> object:
        return self._hook("requestheaders", data)

    def request(self, data: Any) -> object:
        return self._hook("request", data)

    def responseheaders(self, data: Any) -> object:
        return self._hook("responseheaders", data)

    def response(self, data: Any) -> object:
        return self._hook("response", data)

    def next_layer(self, data: Any) -> object:
        return self._hook("next_layer", data)

    def update(self, data: Any) -> object:
        return self._hook("update", data)


class AsyncRequest(Part):
    async def request(self, data: Any) -> None:
        await asyncio.sleep(0)
        self.calls.append((self.name, "request (async)", data.comment))


class ConcurrentRequest(Part):
    @concurrent
    def request(self, data: Any) -> None:
        time.sleep(0.001)
        self.calls.append((self.name, "request (concurrent)", data.comment))


class Stream(layer.Layer):
    """Starts the four HTTP hooks of its flow in turn, as an HTTP stream does."""

    def __init__(self, context: Context, flow_: http.HTTPFlow, heard: list[str]) -> None:
        super().__init__(context)
        self.flow = flow_
        self.heard = heard

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Start):
            for hook in HTTP_HOOKS:
                yield hook(self.flow)
                self.heard.append(f"{self.flow.comment} {hook.name} done")


class Streams(layer.Layer):
    """A next_layer hook, then two streams at once, as an HTTP/2 connection would run them."""

    def __init__(self, context: Context, flows: list[http.HTTPFlow], heard: list[str]) -> None:
        super().__init__(context)
        self.heard = heard
        self.streams = [Stream(context, f, heard) for f in flows]

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Start):
            yield layer.NextLayerHook(layer.NextLayer(self.context))
            self.heard.append("next_layer done")
            for stream in self.streams:
                yield from stream.handle_event(event)
        elif isinstance(event, events.HookCompleted):
            for stream in self.streams:
                if stream._paused is not None and stream._paused.command is event.command:
                    yield from stream.handle_event(event)


class Transport:
    """The client side of a connection that is never written to here."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 5000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


@dataclass
class Seen:
    """What one run of a scenario left behind."""

    calls: list[Call] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    logged: list[tuple[str, int, str, list[str]]] = field(default_factory=list)
    hook_tasks: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def fast_server_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replaced server_event, for this test only; without a table it is mitmproxy's."""
    monkeypatch.setattr(
        mode_servers.ProxyConnectionHandler,
        "server_event",
        mode_servers.ProxyConnectionHandler.server_event,
    )
    monkeypatch.setattr(fast_hooks, "_ARGUMENTS", {})


def run(
    make_addons: Callable[[list[Call]], list[object]],
    *,
    fast: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[list[http.HTTPFlow]], None] = lambda flows: None,
    settle: float = 0.05,
) -> Seen:
    seen = Seen()
    caplog.clear()

    def counting_create_task(coro: Any, *, name: str, **kwargs: Any) -> asyncio.Task[Any]:
        if name.startswith("handle_hook"):
            seen.hook_tasks.append(name)
        return stock_create_task(coro, name=name, **kwargs)

    stock_create_task = asyncio_utils.create_task
    monkeypatch.setattr(asyncio_utils, "create_task", counting_create_task)

    async def scenario() -> None:
        with asyncio_utils.set_eager_task_factory():  # as Master.run
            lean = master.Master(options.Options(), event_loop=asyncio.get_running_loop())
            try:
                lean.addons.add(proxyserver.Proxyserver(), *make_addons(seen.calls))
                if fast:
                    fast_hooks.use_fast_hooks(lean)
                mode = ProxyMode.parse("reverse:http://127.0.0.1:8081")
                transport = Transport()
                handler = mode_servers.ProxyConnectionHandler(
                    lean, transport, transport, lean.options, mode
                )
                flows = []
                for name in ("one", "two"):
                    f = tflow.tflow(resp=True)
                    f.comment = name
                    flows.append(f)
                before(flows)
                handler.layer = Streams(handler.layer.context, flows, seen.heard)
                await handler.server_event(events.Start())
                await asyncio.sleep(settle)
            finally:
                lean._legacy_log_events.uninstall()
        gc.collect()  # tasks that failed log it now, not in the next run

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    for record in caplog.records:
        frames = (
            [frame.name for frame in traceback.extract_tb(record.exc_info[2])]
            if (record.exc_info)
            else []
        )
        message = re.sub(" at 0x[0-9a-f]+", "", record.getMessage())  # another run, other ids
        seen.logged.append((record.name, record.levelno, message, frames))
    return seen


def both(
    make_addons: Callable[[list[Call]], list[object]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    frames: bool = True,
    threads: bool = False,
    **kwargs: Any,
) -> tuple[Seen, Seen]:
    stock = run(make_addons, fast=False, caplog=caplog, monkeypatch=monkeypatch, **kwargs)
    fast = run(make_addons, fast=True, caplog=caplog, monkeypatch=monkeypatch, **kwargs)
    if threads:  # a thread's timing orders the flows: each flow's own order is the same
        for name in ("one", "two"):
            assert [c for c in fast.calls if c[2] == name] == [
                c for c in stock.calls if c[2] == name
            ]
            assert [h for h in fast.heard if h.startswith(name)] == [
                h for h in stock.heard if h.startswith(name)
            ]
    else:
        assert fast.calls == stock.calls
        assert fast.heard == stock.heard
    if frames:
        assert fast.logged == stock.logged
    else:  # a task's own frames differ
        assert [entry[:3] for entry in fast.logged] == [entry[:3] for entry in stock.logged]
    assert len(fast.hook_tasks) < len(stock.hook_tasks)
    return stock, fast


def nested(calls: list[Call], **actions: dict[str, Action]) -> list[object]:
    """Chain: a (children a1, a2), b, c; `actions` by addon name."""
    a1 = Part("a1", calls, actions.get("a1"))
    a2 = Part("a2", calls, actions.get("a2"))
    return [
        Part("a", calls, actions.get("a"), addons=(a1, a2)),
        Part("b", calls, actions.get("b")),
        Part("c", calls, actions.get("c")),
    ]


def raise_(error: Callable[[], BaseException]) -> Action:
    def action(_data: object) -> None:
        raise error()

    return action


# --- the same as mitmproxy's path


def test_synchronous_hooks_run_inline_in_mitmproxy_order(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock, fast = both(nested, caplog, monkeypatch)
    assert stock.calls[:6] == [
        ("a", "next_layer", ""),
        ("a1", "next_layer", ""),
        ("a2", "next_layer", ""),
        ("b", "next_layer", ""),
        ("c", "next_layer", ""),
        ("a", "requestheaders", "one"),
    ]
    assert stock.calls.index(("c", "requestheaders", "one")) + 1 == stock.calls.index(
        ("a", "update", "one")
    )
    assert stock.heard[-2:] == ["one response done", "two response done"]
    assert len(stock.hook_tasks) == 9  # next_layer and four per stream
    assert fast.hook_tasks == []


def test_an_exception_is_contained_per_addon_and_logged_as_mitmproxy_does(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock, _ = both(
        lambda calls: nested(calls, a1={"request": raise_(lambda: ValueError("boom"))}),
        caplog,
        monkeypatch,
    )
    failed = stock.calls.index(("a1", "request", "one"))
    # a2 is a1's sibling within the same addon of the chain: skipped; b goes on.
    assert stock.calls[failed + 1] == ("b", "request", "one")
    errors = [entry for entry in stock.logged if entry[2] == "Addon error: boom"]
    logged = ("mitmproxy.addonmanager", logging.ERROR, "Addon error: boom")
    assert errors == [(*logged, ["request", "_hook", "action"])] * 2  # from the handler on
    assert "one response done" in stock.heard


def test_addon_halt_stops_the_later_addons_but_not_the_update(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock, _ = both(
        lambda calls: nested(calls, a={"request": raise_(exceptions.AddonHalt)}),
        caplog,
        monkeypatch,
    )
    halted = stock.calls.index(("a", "request", "one"))
    assert stock.calls[halted + 1] == ("a", "update", "one")
    assert ("a1", "request", "one") not in stock.calls
    assert ("b", "request", "one") not in stock.calls
    assert "one response done" in stock.heard


def test_a_non_callable_handler_is_an_addon_error_as_in_mitmproxy(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def make(calls: list[Call]) -> list[object]:
        addons = nested(calls)
        addons[0].addons[0].responseheaders = "not a handler"  # type: ignore[attr-defined]
        return addons

    stock, _ = both(make, caplog, monkeypatch)
    assert any(
        "responseheaders" in entry[2] and "not callable" in entry[2] for entry in stock.logged
    )
    assert ("a2", "responseheaders", "one") not in stock.calls


def test_an_async_handler_takes_mitmproxys_path(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock, fast = both(
        lambda calls: [*nested(calls), AsyncRequest("x", calls)], caplog, monkeypatch
    )
    assert ("x", "request (async)", "one") in stock.calls
    assert fast.hook_tasks[0] == "handle_hook(request)"


def test_a_concurrent_handler_takes_mitmproxys_path(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock, fast = both(
        lambda calls: [*nested(calls), ConcurrentRequest("x", calls)],
        caplog,
        monkeypatch,
        threads=True,
    )
    assert ("x", "request (concurrent)", "two") in stock.calls
    assert fast.hook_tasks[0] == "handle_hook(request)"


def test_a_handler_returning_an_awaitable_is_awaited_before_the_later_ones(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def later(calls: list[Call], f: http.HTTPFlow) -> None:
        await asyncio.sleep(0.001)
        calls.append(("a1", "awaited", f.comment))

    def make(calls: list[Call]) -> list[object]:
        return nested(calls, a1={"response": lambda f: later(calls, f)})

    stock, fast = both(make, caplog, monkeypatch)
    awaited = stock.calls.index(("a1", "awaited", "one"))
    assert stock.calls[awaited + 1] == ("a2", "response", "one")
    assert fast.hook_tasks[0] == "handle_hook(response)"


def test_a_flow_intercepted_by_a_handler_completes_when_resumed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def make(calls: list[Call]) -> list[object]:
        held: list[flow.Flow] = []

        def resume() -> None:
            for f in held:
                f.resume()

        def intercept(f: flow.Flow) -> None:
            f.intercept()
            held.append(f)
            if len(held) == 1:  # one timer for both: their order is the loop's, not the clock's
                asyncio.get_running_loop().call_later(0.01, resume)

        return nested(calls, b={"request": intercept})

    stock, _ = both(make, caplog, monkeypatch)
    assert {"one response done", "two response done"} <= set(stock.heard)


def test_an_intercepted_flow_takes_mitmproxys_path(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def intercept_first(flows: list[http.HTTPFlow]) -> None:
        flows[0].intercept()
        asyncio.get_running_loop().call_later(0.01, flows[0].resume)

    _, fast = both(nested, caplog, monkeypatch, before=intercept_first)
    assert fast.hook_tasks[0] == "handle_hook(requestheaders)"


def test_an_options_error_escapes_and_the_hook_never_completes(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock, _ = both(
        lambda calls: nested(calls, c={"request": raise_(lambda: exceptions.OptionsError("bad"))}),
        caplog,
        monkeypatch,
        frames=False,
    )
    assert "one request done" not in stock.heard
    assert any("exception=OptionsError('bad')" in entry[2] for entry in stock.logged)


# --- the table


@dataclass
class Named(hooks.Hook):
    name = ""  # not registered: a stand-in of any hook for AddonManager._iter_hooks


def runner_master() -> Iterator[master.Master]:
    loop = asyncio.new_event_loop()
    built = master.Master(options.Options(), event_loop=loop, with_termlog=False)
    try:
        built.addons.add(*lean_addons(), Dispatcher())
        yield built
    finally:
        built._legacy_log_events.uninstall()
        loop.close()


@pytest.fixture
def lean() -> Iterator[master.Master]:
    yield from runner_master()


def test_the_table_holds_mitmproxys_handlers_in_its_order_for_every_hook(
    lean: master.Master,
) -> None:
    table = fast_hooks.HookTable(lean.addons)
    for name in hooks.all_hooks:
        event = Named()
        event.name = name  # type: ignore[misc]  # as each hook class has it
        stock = [
            [func for _, func in lean.addons._iter_hooks(addon, event)]
            for addon in lean.addons.chain
        ]
        assert [list(group) for group in table.handlers(name).groups] == [g for g in stock if g]


def test_the_table_marks_hooks_with_a_coroutine_handler(lean: master.Master) -> None:
    table = fast_hooks.HookTable(lean.addons)
    assert table.handlers("request").synchronous
    assert table.handlers("no_such_hook").groups == ()
    calls: list[Call] = []
    lean.addons.add(AsyncRequest("x", calls))
    table.invalidate()
    assert not table.handlers("request").synchronous


def test_adding_an_addon_rebuilds_the_table(lean: master.Master) -> None:
    table = fast_hooks.use_fast_hooks(lean)
    before = len(table.handlers("response").groups)
    lean.addons.add(Part("late", []))
    assert len(table.handlers("response").groups) == before + 1
    lean.addons.remove(lean.addons.get("late"))
    assert len(table.handlers("response").groups) == before


# --- through real layers and sockets: the runner's addons see the same


class Upstream:
    """A keep-alive HTTP/1.1 server answering every request with 200 and a short body."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()


def proxy_run(fast: bool, requests: int = 3, to_client: list[bytes] | None = None) -> list[Call]:
    """The calls the nested addons saw; `to_client`: each write the proxy made to its client."""
    calls: list[Call] = []
    port = free_port()
    stock_write = asyncio.StreamWriter.write

    def recording_write(writer: asyncio.StreamWriter, data: Any) -> None:
        if to_client is not None and writer.get_extra_info("sockname")[1] == port:
            to_client.append(bytes(data))
        stock_write(writer, data)

    async def scenario() -> None:
        upstream = await asyncio.start_server(Upstream().serve, "127.0.0.1", 0)
        upstream_port = upstream.sockets[0].getsockname()[1]
        lean = master.Master(options.Options(), event_loop=asyncio.get_running_loop())
        lean.addons.add(proxyserver.Proxyserver(), next_layer.NextLayer(), *nested(calls))
        lean.options.update(
            mode=[f"reverse:http://127.0.0.1:{upstream_port}@{port}"],
            listen_host="127.0.0.1",
            connection_strategy="lazy",
        )
        if fast:
            fast_hooks.use_fast_hooks(lean)
        running = asyncio.create_task(lean.run())
        try:
            for _ in range(200):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(requests):
                writer.write(b"GET / HTTP/1.1\r\nHost: sidecar.test\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert await reader.readexactly(2) == b"ok"
            writer.close()
            await asyncio.sleep(0.05)
        finally:
            lean.shutdown()
            await running
            lean._legacy_log_events.uninstall()
            upstream.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio.StreamWriter, "write", recording_write)
        asyncio.run(scenario())
    return calls


@pytest.mark.spawns
def test_real_layers_call_the_same_hooks_in_the_same_order() -> None:
    stock = proxy_run(fast=False)
    assert stock.count(("c", "response", "")) == 3
    assert proxy_run(fast=True) == stock


@pytest.mark.spawns
def test_a_responses_head_and_body_reach_the_client_in_one_write() -> None:
    stock: list[bytes] = []
    fast: list[bytes] = []
    proxy_run(fast=False, to_client=stock)
    proxy_run(fast=True, to_client=fast)
    assert b"".join(fast) == b"".join(stock)
    assert b"".join(stock).count(b"HTTP/1.1 200") == 3
    assert len(stock) == 6  # mitmproxy: head, then body
    assert len(fast) == 3
    assert all(write.startswith(b"HTTP/1.1 200") and write.endswith(b"ok") for write in fast)


class RecordingWriter:
    def __init__(self, name: str, log: list[tuple[str, bytes]], closing: bool = False) -> None:
        self.name, self.log, self.closing = name, log, closing

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))


class ScriptedLayer:
    def __init__(self, script: list[commands.Command], fail: bool = False) -> None:
        self.script, self.fail = script, fail

    def handle_event(self, _event: events.Event) -> Iterator[commands.Command]:
        yield from self.script
        if self.fail:
            raise RuntimeError("the layer failed")


@dataclass
class ScriptedHandler:
    """What `_handle_event` uses of a connection handler, recording what it is asked to do."""

    layer: ScriptedLayer
    done: list[tuple[str, bytes]] = field(default_factory=list)
    transports: dict[object, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timeout_watchdog = type("Watchdog", (), {"register_activity": lambda _self: None})()

    def close_connection(self, connection: object, _half_close: bool = False) -> None:
        self.done.append(("close", str(connection).encode()))

    def log(self, message: str, _level: int, exc_info: bool = False) -> None:
        self.done.append(("log", message.encode()))


def test_writes_are_joined_per_connection_and_kept_in_order_with_other_commands() -> None:
    client, server_, gone = (
        connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2)),
        connection.Server(address=("127.0.0.1", 3)),
        connection.Server(address=("127.0.0.1", 4)),
    )
    handler = ScriptedHandler(
        ScriptedLayer(
            [
                commands.SendData(client, b"head "),
                commands.SendData(client, b"body"),
                commands.SendData(gone, b"nobody hears this"),  # not in transports: dropped
                commands.SendData(server_, b"request"),
                commands.SendData(client, b"more"),
                commands.CloseConnection(client),
                commands.SendData(server_, b"last"),
            ],
            fail=True,
        )
    )
    handler.transports = {
        client: server.ConnectionIO(writer=RecordingWriter("client", handler.done)),  # type: ignore[arg-type]
        server_: server.ConnectionIO(writer=RecordingWriter("server", handler.done)),  # type: ignore[arg-type]
    }
    fast_hooks._handle_event(handler, events.Start(), None, collections.deque())  # type: ignore[arg-type]
    assert handler.done == [
        ("client", b"head body"),
        ("server", b"request"),
        ("client", b"more"),
        ("close", str(client).encode()),
        ("server", b"last"),  # sent before the layer failed, written before the crash is logged
        ("log", b"mitmproxy has crashed!"),
    ]


def test_a_closing_writer_gets_nothing_as_in_mitmproxy() -> None:
    client = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2))
    handler = ScriptedHandler(ScriptedLayer([commands.SendData(client, b"late")]))
    handler.transports = {
        client: server.ConnectionIO(writer=RecordingWriter("client", handler.done, closing=True))  # type: ignore[arg-type]
    }
    fast_hooks._handle_event(handler, events.Start(), None, collections.deque())  # type: ignore[arg-type]
    assert handler.done == []


# --- the checks


def problems_naming(lean: master.Master, name: str) -> list[str]:
    return [problem for problem in internals.self_check(lean) if problem.startswith(name)]


def test_the_fast_hook_reaches_hold_in_the_installed_mitmproxy(lean: master.Master) -> None:
    for reach in fast_hooks.FAST_HOOK_REACHES:
        assert reach.check(lean) is None, reach.name


def test_a_changed_server_event_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def server_event(self: server.ConnectionHandler, event: events.Event) -> None:
        pass  # a different body

    monkeypatch.setattr(server.ConnectionHandler, "server_event", server_event)
    (problem,) = problems_naming(lean, "mitmproxy's hook path")
    assert "ConnectionHandler.server_event is not the code the fast hook path reproduces" in problem


@pytest.mark.parametrize("piece", sorted(fast_hooks.STOCK_FINGERPRINTS))
def test_every_piece_of_mitmproxy_reproduced_is_fingerprinted(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch, piece: str
) -> None:
    monkeypatch.setitem(fast_hooks.STOCK_FINGERPRINTS, piece, "0" * 16)
    (problem,) = problems_naming(lean, "mitmproxy's hook path")
    assert f"{piece} is not the code the fast hook path reproduces" in problem


def test_a_server_event_replaced_by_someone_else_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def server_event(self: server.ConnectionHandler, event: events.Event) -> None:
        pass

    monkeypatch.setattr(mode_servers.ProxyConnectionHandler, "server_event", server_event)
    assert problems_naming(lean, "ProxyConnectionHandler.server_event") == [
        "ProxyConnectionHandler.server_event (replaced in the runner): "
        "ProxyConnectionHandler.server_event is already replaced (or mitmproxy moved it)"
    ]


def test_our_own_replacement_passes_the_check(lean: master.Master) -> None:
    fast_hooks.use_fast_hooks(lean)
    assert mode_servers.ProxyConnectionHandler.server_event is fast_hooks._server_event
    assert internals.self_check(lean) == []


def test_a_watchdog_without_blocker_count_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    def __init__(self: server.TimeoutWatchdog, timeout: int, callback: Any) -> None:
        self.timeout = timeout

    monkeypatch.setattr(server.TimeoutWatchdog, "__init__", __init__)
    assert problems_naming(lean, "ConnectionHandler's lock") == [
        "ConnectionHandler's lock, layer and watchdog: "
        "TimeoutWatchdog no longer counts its blockers in .blocker"
    ]


def test_an_addon_manager_without_chain_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lean.addons, "chain", None)
    assert problems_naming(lean, "AddonManager.chain") == [
        "AddonManager.chain and its add/register/remove/clear: "
        "AddonManager.chain is not the list of addons"
    ]


def test_a_master_without_eager_tasks_is_noticed(
    lean: master.Master, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run(self: master.Master) -> None:
        pass

    monkeypatch.setattr(master.Master, "run", run)
    assert problems_naming(lean, "Master.run's eager") == [
        "Master.run's eager task factory: Master.run no longer installs the eager task factory"
    ]


def test_the_runner_uses_the_fast_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("key: environment\ndestination: http://127.0.0.1:1\n")

    async def build() -> master.Master:
        built = build_master(
            [
                "mode=reverse:http://127.0.0.1:1@1",
                f"dispatcher_config={config}",
                "dispatcher_admin=",
                "dispatcher_watch=false",
            ],
            reuse_port=False,
        )
        built._legacy_log_events.uninstall()
        return built

    built = asyncio.run(build())
    assert fast_hooks.hook_table(built) is not None
    assert mode_servers.ProxyConnectionHandler.server_event is fast_hooks._server_event
    # and the other shortcuts its profile asked for (tests/test_header_lookups.py, ...)
    assert header_lookups.installed()
    assert flow_ids.installed()
    terminal = built.addons.get("dispatcher").access_log.terminal
    assert isinstance(terminal, terminal_lines.TerminalLines)
    # With the runner's own handlers (pytest's capturing ones set aside), its lines go direct.
    root = logging.getLogger()
    monkeypatch.setattr(
        root, "handlers", [h for h in root.handlers if isinstance(h, log.MitmLogHandler)]
    )
    assert terminal._only_printer()
    built.addons.clear()


def test_a_master_without_the_table_keeps_mitmproxys_path(lean: master.Master) -> None:
    assert fast_hooks.hook_table(lean) is None
    assert "trigger_event" not in vars(lean.addons)  # the addon manager is mitmproxy's


# --- the runner's batched standard output (access_log.BatchedOutput)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


def test_batched_lines_are_written_together_by_the_loops_timer() -> None:
    target = CountingStream()

    async def scenario() -> None:
        out = BatchedOutput(target, asyncio.get_running_loop())
        print("one", file=out)
        print("two", file=out)
        assert target.getvalue() == ""  # held for a moment...
        await asyncio.sleep(FLUSH_DELAY * 4)
        assert target.getvalue() == "one\ntwo\n"  # ...then written in one go
        assert target.writes == 1

    asyncio.run(scenario())


def test_batched_lines_are_written_at_once_when_flushed_or_many() -> None:
    target = CountingStream()

    async def scenario() -> None:
        out = BatchedOutput(target, asyncio.get_running_loop())
        out.write("first\n")
        out.flush()
        assert target.getvalue() == "first\n"
        out.write("x" * FLUSH_SIZE)
        assert len(target.getvalue()) == len("first\n") + FLUSH_SIZE

    asyncio.run(scenario())


def test_a_line_from_another_thread_is_written_at_once_after_those_waiting() -> None:
    target = CountingStream()

    async def scenario() -> None:
        out = BatchedOutput(target, asyncio.get_running_loop())
        out.write("from the loop\n")
        thread = threading.Thread(target=out.write, args=("from a thread\n",))
        thread.start()
        thread.join()
        assert target.getvalue() == "from the loop\nfrom a thread\n"

    asyncio.run(scenario())


def test_json_lines_are_flushed_each_unless_stdout_batches_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = CountingStream()
    monkeypatch.setattr(sys, "stdout", plain)
    write_stdout_line('{"a": 1}')
    assert (plain.getvalue(), plain.flushes) == ('{"a": 1}\n', 1)

    batched = CountingStream()

    async def scenario() -> None:
        out = BatchedOutput(batched, asyncio.get_running_loop())
        monkeypatch.setattr(sys, "stdout", out)
        write_stdout_line('{"b": 2}')
        write_stdout_line('{"c": 3}')
        assert batched.flushes == 0
        out.flush()

    asyncio.run(scenario())
    assert (batched.getvalue(), batched.writes) == ('{"b": 2}\n{"c": 3}\n', 1)
