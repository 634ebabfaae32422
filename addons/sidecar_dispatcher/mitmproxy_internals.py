"""Every use this project makes of mitmproxy beyond its public addon API, in one module.

    problems = self_check(master)   # [] when the installed mitmproxy has all of them

mitmproxy's addon API (hooks, options, commands, flows) is public. The lean runner also relies
on a few internals: private attributes, a discouraged call and one replaced method; and the
upstream timeout (`timeouts.py`, under mitmdump too) on two wrapped methods of mitmproxy's HTTP
layer and an injected event. Each is wrapped here, and listed in `REACHES` with a check that it
is still there and shaped as this code expects. `tests/test_mitmproxy_internals.py` runs every
check against the installed mitmproxy, and the runner runs them at start-up and refuses to
start, naming the internal and the mitmproxy version, instead of misbehaving after an upgrade
(under mitmdump, `UpstreamTimeouts` runs the checks of its own reaches and logs an error, which
stops mitmdump at start-up). A new reach goes here, with a check in `REACHES` and a test.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from mitmproxy import hooks, http, master
from mitmproxy.addons import proxyserver
from mitmproxy.connection import Connection, ConnectionState
from mitmproxy.proxy import commands, events, layer, mode_servers, server
from mitmproxy.proxy.layers.http import (
    GetHttpConnection,
    HttpLayer,
    HttpStream,
    SendHttp,
    _http1,
    _http2,
)
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestProtocolError,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook


def mitmproxy_version() -> str:
    return metadata.version("mitmproxy")


# --- the reaches


def drop_legacy_log_events(lean: master.Master) -> None:
    """Stop turning every log record into a deprecated `add_log` event for all addons.

    None of the runner's addons listens for it, and it costs ~2 % of throughput (bench/).
    """
    lean._legacy_log_events.uninstall()


def configure_all(lean: master.Master) -> None:
    """Send every addon one configure event naming every option, as mitmdump's start-up does.

    `AddonManager.trigger` is public but documented as discouraged; the runner needs this
    synchronous form to load the config and the CA before anything listens.
    """
    lean.addons.trigger(hooks.ConfigureHook(set(lean.options.keys())))


def share_listening_port() -> None:
    """Make reverse-mode listeners bind with SO_REUSEPORT, so that workers share the port.

    mitmproxy's `ReverseInstance.listen` (inherited from `AsyncioServerInstance`) creates its
    TCP listener with `asyncio.start_server(self.handle_stream, host, port)`; this replaces it,
    in this process only, with the same call plus `reuse_port=True`. Workers need a fixed TCP
    port: port 0 (mitmproxy's "pick one") and UDP modes are refused.
    """

    async def listen(self: mode_servers.ReverseInstance, host: str, port: int) -> list[object]:
        if self.mode.transport_protocol != "tcp":
            raise OSError(f"--workers needs a TCP listener, not {self.mode.transport_protocol}")
        if port == 0:
            raise OSError("--workers needs a fixed port to share, not port 0")
        server = await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True)
        return [server]

    mode_servers.ReverseInstance.listen = listen  # type: ignore[method-assign,assignment]


def _proxy_server(lean: master.Master) -> proxyserver.Proxyserver:
    server: proxyserver.Proxyserver = lean.addons.get("proxyserver")
    return server


async def stop_listening(lean: master.Master) -> None:
    """Close every listening socket; connections already accepted carry on."""
    await _proxy_server(lean).servers.update([])


def open_connections(lean: master.Master) -> int:
    """How many client connections the proxy is serving now."""
    return len(_proxy_server(lean).connections)


# --- answering a flow whose response headers are overdue (timeouts.py)
#
# mitmproxy has no per-request response timeout, and once a request has gone upstream an addon
# cannot answer it: hooks run only when something happens to the flow. So the timer lives in the
# addon, and when it expires the addon injects `ResponseHeadersOverdue` into the flow's client
# connection with `Proxyserver.inject_event`, the door mitmproxy's own `inject.*` commands use.
# The connection handles it like any event (under its lock, with its commands and hooks), and
# two wrapped methods of mitmproxy's HTTP layer do the rest:
#
# - `HttpLayer._handle_event` hands the event to the flow's `HttpStream`. (mitmproxy's own
#   routing of injected messages finds a stream only through an open HTTP/1 upstream connection,
#   and the stream refuses what is not HTTP.) A stream waiting for response headers gets an
#   `_OverdueError`. A stream waiting for its upstream connection (TCP
#   connect, TLS handshake) has that connection closed, once mitmproxy can report it, and then
#   gets mitmproxy's own "connect failed" error.
# - `HttpStream.handle_protocol_error`, for a stream holding an overdue answer, resets the
#   request upstream (HTTP/1: closes the connection; HTTP/2: RST_STREAM on that stream only) and
#   answers the client through the `responseheaders` and `response` hooks, as mitmproxy does
#   with a response an addon sets in `request`. Every other error takes mitmproxy's own path.

OVERDUE_ANSWER = "_dispatcher_overdue_answer"  # on an HttpStream: its answer, once overdue
_STOCK = "_dispatcher_wraps"  # on a wrapper: the stock method it wraps


class Delivery(enum.Enum):
    """What became of a `ResponseHeadersOverdue`, told to its `delivered` callback."""

    ANSWERING = "answering"  # the stream answers now: the hooks, then the client
    CONNECT_CANCELLED = "connect cancelled"  # it answers once mitmproxy reports the cancel
    NOT_YET = "not yet"  # its connection is being opened, or a hook runs: ask again shortly
    NOTHING_TO_DO = "nothing to do"  # no stream of that flow waits for response headers


@dataclass
class ResponseHeadersOverdue(events.MessageInjected[http.Response]):
    """`flow`'s response headers are overdue: answer `message` instead of its destination."""

    flow: http.HTTPFlow
    reason: str  # sent along with the upstream reset
    delivered: Callable[[Delivery], None]  # called once, while the connection handles the event


class _OverdueError(ResponseProtocolError):
    """What a stream waiting for response headers gets; only the wrapper below handles it."""


def inject_overdue(running: master.Master, event: ResponseHeadersOverdue) -> bool:
    """Hand `event` to its flow's connection; False if that is gone (or nothing serves).

    The connection handles it in a task of its own, which mitmproxy's eager task factory may
    run at once: `event.delivered` may be called before this returns.
    """
    server = running.addons.get("proxyserver")
    if server is None:
        return False
    try:
        server.inject_event(event)
    except ValueError:  # "Flow is not from a live connection."
        return False
    return True


def answer_overdue_flows() -> None:
    """Wrap the two methods (once in a process; mitmproxy's own stay underneath)."""
    if not hasattr(HttpLayer._handle_event, _STOCK):
        stock_handle_event = HttpLayer._handle_event

        def _handle_event(self: HttpLayer, event: events.Event) -> layer.CommandGenerator[None]:
            # Not a generator itself: every event of every connection passes here.
            if isinstance(event, ResponseHeadersOverdue):
                return _deliver_overdue(self, event)
            commands_: layer.CommandGenerator[None] = stock_handle_event(self, event)
            return commands_

        setattr(_handle_event, _STOCK, stock_handle_event)
        HttpLayer._handle_event = _handle_event  # type: ignore[method-assign]
    if not hasattr(HttpStream.handle_protocol_error, _STOCK):
        stock_handle_protocol_error = HttpStream.handle_protocol_error

        def handle_protocol_error(
            self: HttpStream, event: RequestProtocolError | ResponseProtocolError
        ) -> layer.CommandGenerator[None]:
            answer = self.__dict__.get(OVERDUE_ANSWER)
            if answer is None or not isinstance(event, ResponseProtocolError):
                return stock_handle_protocol_error(self, event)
            if not _waits_for_response_headers(self):
                return stock_handle_protocol_error(self, event)
            return _answer_overdue(self, event, answer)

        setattr(handle_protocol_error, _STOCK, stock_handle_protocol_error)
        HttpStream.handle_protocol_error = handle_protocol_error  # type: ignore[method-assign]


def stock_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """mitmproxy's own method under a wrapper of answer_overdue_flows(), or `method`."""
    stock: Callable[..., Any] = getattr(method, _STOCK, method)
    return stock


def _waits_for_response_headers(stream: HttpStream) -> bool:
    """The request is complete, and nothing of the response has come (or been set) yet."""
    return bool(
        stream.client_state == stream.state_done
        and stream.server_state == stream.state_wait_for_response_headers
    )


def _deliver_overdue(
    http_layer: HttpLayer, event: ResponseHeadersOverdue
) -> layer.CommandGenerator[None]:
    flow = event.flow
    stream = next((s for s in http_layer.streams.values() if s.__dict__.get("flow") is flow), None)
    if stream is None or flow.response is not None or flow.error is not None:
        event.delivered(Delivery.NOTHING_TO_DO)
        return
    paused = stream._paused
    if paused is not None:  # waiting for a hook, or for its upstream connection
        if isinstance(paused.command, GetHttpConnection) and _waits_for_response_headers(stream):
            stream.__dict__[OVERDUE_ANSWER] = event.message  # for the "connect failed" to come
            connection = _connection_opened_for(http_layer, paused.command)
            if connection is not None and _may_cancel_connect(http_layer, connection):
                yield commands.CloseConnection(connection)
                event.delivered(Delivery.CONNECT_CANCELLED)
                return
        event.delivered(Delivery.NOT_YET)
        return
    if not _waits_for_response_headers(stream):
        event.delivered(Delivery.NOTHING_TO_DO)
        return
    stream.__dict__[OVERDUE_ANSWER] = event.message
    event.delivered(Delivery.ANSWERING)
    overdue = _OverdueError(stream.stream_id, event.reason, ErrorCode.GENERIC_SERVER_ERROR)
    yield from http_layer.event_to_child(stream, overdue)


def _connection_opened_for(http_layer: HttpLayer, command: GetHttpConnection) -> Connection | None:
    for connection, waiting in http_layer.waiting_for_establishment.items():
        if any(waiting_command is command for waiting_command in waiting):
            return connection
    return None


def _may_cancel_connect(http_layer: HttpLayer, connection: Connection) -> bool:
    """Whether closing this connection, still being opened, is safe and reported back."""
    for command in http_layer.waiting_for_establishment.get(connection, []):
        stream = http_layer.command_sources.get(command)
        if stream is None or OVERDUE_ANSWER not in stream.__dict__:
            return False  # a stream still within its time would get mitmproxy's 502
    opener = http_layer.connections.get(connection)
    if opener is None:
        return False
    if opener._paused is None:
        return True  # TCP is up, a TLS handshake runs: the close fails the handshake
    # mitmproxy is still opening it. ConnectionHandler.open_connection reports a cancel only
    # while asyncio.open_connection runs; one during the server_connect hook or the
    # per-destination connection limit before it, or the server_connected hook after it, would
    # go unreported and leave the stream waiting for good.
    return (
        connection.timestamp_start is not None
        and connection.state is ConnectionState.CLOSED
        and connection.error is None
    )


def _answer_overdue(
    stream: HttpStream, event: ResponseProtocolError, answer: http.Response
) -> layer.CommandGenerator[None]:
    del stream.__dict__[OVERDUE_ANSWER]
    if isinstance(event, _OverdueError):  # the request went upstream: reset it there
        cancel = RequestProtocolError(stream.stream_id, event.message, ErrorCode.CANCEL)
        yield SendHttp(cancel, stream.context.server)
    flow = stream.flow
    answer.timestamp_start = time.time()
    flow.response = answer
    # As HttpStream.state_consume_request_body does with a response set by an addon.
    yield HttpResponseHeadersHook(flow)
    if (yield from stream.check_killed(True)):
        return
    yield from stream.send_response()
    # Whatever the destination may still send for this stream is dropped.
    stream.client_state = stream.server_state = stream.state_errored


# --- the checks


@dataclass(frozen=True)
class Reach:
    """One internal relied on: what it is, and a check returning what is wrong, or None."""

    name: str
    check: Callable[[master.Master], str | None]
    for_timeouts: bool = False  # UpstreamTimeouts checks it itself, under mitmdump too


def _check_legacy_log_events(lean: master.Master) -> str | None:
    events = getattr(lean, "_legacy_log_events", None)
    if events is None:
        return "the master has no _legacy_log_events attribute"
    if not callable(getattr(events, "uninstall", None)):
        return "_legacy_log_events has no uninstall() method"
    return None


def _check_trigger(lean: master.Master) -> str | None:
    trigger = getattr(lean.addons, "trigger", None)
    if trigger is None:
        return "AddonManager has no trigger() method"
    if inspect.iscoroutinefunction(trigger):
        return "AddonManager.trigger() is a coroutine now; the runner calls it synchronously"
    return None


# What share_listening_port() replicates; if mitmproxy's listen() no longer makes this call,
# the replacement would silently differ from it.
STOCK_LISTEN_CALL = "asyncio.start_server(self.handle_stream, host, port)"


def _check_reverse_listen(_lean: master.Master) -> str | None:
    listen = getattr(mode_servers.ReverseInstance, "listen", None)
    if listen is None:
        return "ReverseInstance has no listen() method"
    if list(inspect.signature(listen).parameters) != ["self", "host", "port"]:
        return f"ReverseInstance.listen{inspect.signature(listen)} is not (self, host, port)"
    if listen.__qualname__ != "AsyncioServerInstance.listen":
        return "ReverseInstance.listen is already replaced (or mitmproxy moved it)"
    try:
        source = inspect.getsource(listen)
    except (OSError, TypeError):
        return "the source of ReverseInstance.listen cannot be read to compare it"
    if STOCK_LISTEN_CALL not in source:
        return f"ReverseInstance.listen no longer calls {STOCK_LISTEN_CALL}"
    return None


def _check_proxy_server(lean: master.Master) -> str | None:
    server = lean.addons.get("proxyserver")
    if server is None:
        return "no proxyserver addon is loaded"
    servers = getattr(server, "servers", None)
    if not inspect.iscoroutinefunction(getattr(servers, "update", None)):
        return "Proxyserver.servers has no async update() method"
    if not isinstance(getattr(server, "connections", None), dict):
        return "Proxyserver.connections is not a dict of open connections"
    return None


def _compact(text: str) -> str:
    return "".join(text.split())


def _source_lacks(function: object, fragments: tuple[str, ...]) -> str | None:
    """The first of `fragments` (in order, whitespace ignored) not in the function's source."""
    try:
        source = _compact(inspect.getsource(function))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return f"the source of {getattr(function, '__qualname__', function)} cannot be read"
    position = 0
    for fragment in fragments:
        found = source.find(_compact(fragment), position)
        if found < 0:
            name = getattr(function, "__qualname__", function)
            return f"{name} no longer has `{fragment}`"
        position = found + len(_compact(fragment))
    return None


def _first_problem(*problems: Callable[[], str | None]) -> str | None:
    for problem in problems:
        if (found := problem()) is not None:
            return found
    return None


def _check_wrappable(cls: type, name: str, parameters: list[str]) -> str | None:
    """The method is mitmproxy's own (or our wrapper of it), with these parameters."""
    current = getattr(cls, name, None)
    if current is None:
        return f"{cls.__name__} has no {name}() method"
    stock = stock_method(current)
    if stock.__qualname__ != f"{cls.__name__}.{name}":
        return f"{cls.__name__}.{name} is already replaced (or mitmproxy moved it)"
    if list(inspect.signature(stock).parameters) != parameters:
        return f"{cls.__name__}.{name}{inspect.signature(stock)} is not ({', '.join(parameters)})"
    if not inspect.isgeneratorfunction(inspect.unwrap(stock)):
        return f"{cls.__name__}.{name} is no longer a generator of commands"
    return None


def _check_inject_event(_lean: master.Master) -> str | None:
    inject = getattr(proxyserver.Proxyserver, "inject_event", None)
    if inject is None:
        return "Proxyserver has no inject_event() method"
    if list(inspect.signature(inject).parameters) != ["self", "event"]:
        return f"Proxyserver.inject_event{inspect.signature(inject)} is not (self, event)"
    return _source_lacks(inject, STOCK_INJECT_EVENT)


# What each reach relies on in mitmproxy's source, in order (whitespace ignored). If an upgrade
# rewrites one of these, the check names it: read the new code before updating the fragment.
STOCK_INJECT_EVENT = (
    'raise ValueError("Flow is not from a live connection.")',
    "self.connections[connection_id].server_event(event)",
)
STOCK_HTTP_LAYER = {
    # An injected event reaches the HttpLayer as any other event does.
    "_handle_event": ("elif isinstance(event, events.MessageInjected):",),
    # A stream's blocking commands (GetHttpConnection) are found again by command.
    "event_to_child": ("self.command_sources[command] = child",),
    # The connection a stream waits for, and the layer that opens it.
    "get_connection": (
        "self.connections[context.server] = stack[0]",
        "self.waiting_for_establishment[context.server].append(event)",
    ),
    # Its waiters hear of its failure; their list must stay in place until then.
    "register_connection": (
        "waiting = self.waiting_for_establishment.pop(command.connection)",
        "GetHttpConnectionCompleted(cmd, reply)",
    ),
}
STOCK_LAYER_PAUSE = (  # layer.Layer.handle_event: a layer waiting for a reply is `_paused`
    "self._paused_event_queue.append(event)",
    "self._paused = Paused(",
)
STOCK_HTTP_STREAM = {
    "_handle_event": (
        "isinstance(event, (RequestProtocolError, ResponseProtocolError))",
        "yield from self.handle_protocol_error(event)",
    ),
    "state_wait_for_request_headers": (
        "yield HttpRequestHeadersHook(self.flow)",
        "self.server_state = self.state_wait_for_response_headers",
    ),
    # A response an addon set in `request`: what _answer_overdue() does the same way.
    "state_consume_request_body": (
        "self.client_state = self.state_done",
        "yield HttpRequestHook(self.flow)",
        "self.flow.response.timestamp_start = time.time()",
        "yield HttpResponseHeadersHook(self.flow)",
        "if (yield from self.check_killed(True)):",
        "yield from self.send_response()",
        "ok = yield from self.make_server_connection()",
    ),
    "make_server_connection": (
        "connection, err = yield GetHttpConnection(",
        "yield from self.handle_protocol_error(",
        "ErrorCode.CONNECT_FAILED",
    ),
    "send_response": (
        "yield HttpResponseHook(self.flow)",
        "self.server_state = self.state_done",
        "if self.client_state == self.state_done:",
        "yield from self.flow_done()",
    ),
}
# The upstream reset: a RequestProtocolError closes an HTTP/1 connection, resets an HTTP/2 stream.
STOCK_HTTP1_CLIENT_SEND = (
    "if isinstance(event, RequestProtocolError):",
    "yield commands.CloseConnection(self.conn)",
)
STOCK_HTTP2_CONNECTION = (
    "case ErrorCode.CANCEL | ErrorCode.CLIENT_DISCONNECTED:",
    "error_code = h2.errors.ErrorCodes.CANCEL",
    "self.h2_conn.reset_stream(event.stream_id, error_code.value)",
)
# When a connect being opened may be cancelled (_may_cancel_connect), and how a close is done.
STOCK_OPEN_CONNECTION = (
    "await self.handle_hook(server_hooks.ServerConnectHook(hook_data))",
    "async with self.max_conns[command.connection.address]:",
    "command.connection.timestamp_start = time.time()",
    "except (OSError, asyncio.CancelledError) as e:",
    "command.connection.error = err",
    "await self.server_event(events.OpenConnectionCompleted(command, err))",
    "command.connection.state = ConnectionState.OPEN",
    "await self.handle_hook(server_hooks.ServerConnectedHook(hook_data))",
)
STOCK_CLOSE_CONNECTION = (
    "connection.state = ConnectionState.CLOSED",
    "handler = self.transports[connection].handler",
    "handler.cancel(",
)


def _check_http_layer(_lean: master.Master) -> str | None:
    return _first_problem(
        lambda: _check_wrappable(HttpLayer, "_handle_event", ["self", "event"]),
        *(
            lambda name=name, fragments=fragments: _source_lacks(
                stock_method(getattr(HttpLayer, name)), fragments
            )
            for name, fragments in STOCK_HTTP_LAYER.items()
        ),
        lambda: _source_lacks(layer.Layer.handle_event, STOCK_LAYER_PAUSE),
        lambda: None if "command" in layer.Paused._fields else "layer.Paused has no command",
    )


def _check_http_stream(_lean: master.Master) -> str | None:
    return _first_problem(
        lambda: _check_wrappable(HttpStream, "handle_protocol_error", ["self", "event"]),
        *(
            lambda name=name, fragments=fragments: _source_lacks(
                getattr(HttpStream, name), fragments
            )
            for name, fragments in STOCK_HTTP_STREAM.items()
        ),
        lambda: _source_lacks(_http1.Http1Client.send, STOCK_HTTP1_CLIENT_SEND),
        lambda: _source_lacks(_http2.Http2Connection._handle_event, STOCK_HTTP2_CONNECTION),
        lambda: None if callable(HttpStream.state_errored) else "HttpStream has no state_errored",
    )


def _check_connect_cancel(_lean: master.Master) -> str | None:
    return _first_problem(
        lambda: _source_lacks(server.ConnectionHandler.open_connection, STOCK_OPEN_CONNECTION),
        lambda: _source_lacks(server.ConnectionHandler.close_connection, STOCK_CLOSE_CONNECTION),
    )


REACHES = (
    Reach("Master._legacy_log_events.uninstall()", _check_legacy_log_events),
    Reach("AddonManager.trigger()", _check_trigger),
    Reach("ReverseInstance.listen (replaced for --workers)", _check_reverse_listen),
    Reach("Proxyserver.servers.update() and .connections", _check_proxy_server),
    Reach("Proxyserver.inject_event()", _check_inject_event, for_timeouts=True),
    Reach("HttpLayer._handle_event (wrapped)", _check_http_layer, for_timeouts=True),
    Reach("HttpStream.handle_protocol_error (wrapped)", _check_http_stream, for_timeouts=True),
    Reach(
        "ConnectionHandler.open_connection (cut short)", _check_connect_cancel, for_timeouts=True
    ),
)


def self_check(lean: master.Master, *, timeouts_only: bool = False) -> list[str]:
    """One line per internal that this mitmproxy lacks or has changed; [] when all hold.

    `timeouts_only`: those of the upstream timeout, which mitmdump needs too.
    """
    problems = []
    for reach in REACHES:
        if timeouts_only and not reach.for_timeouts:
            continue
        problem = reach.check(lean)
        if problem is not None:
            problems.append(f"{reach.name}: {problem}")
    return problems


class InternalsChanged(RuntimeError):
    """The installed mitmproxy lacks internals the runner relies on."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"mitmproxy {mitmproxy_version()} lacks internals the runner relies on:\n{listed}\n"
            "Install the mitmproxy version this package declares (pyproject.toml), or run "
            "`mitmdump -s addons/dispatcher.py`, which uses only mitmproxy's public addon API."
        )
