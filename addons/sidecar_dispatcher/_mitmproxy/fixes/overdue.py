"""Answering a flow whose response headers are overdue: the upstream timeout's reach.

delivery = inject_overdue(master, ResponseHeadersOverdue(flow, answer))
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import http, master
from mitmproxy.connection import Connection, ConnectionState
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers.http import (
    GetHttpConnection,
    HttpLayer,
    HttpStream,
    SendHttp,
)
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestProtocolError,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

from ..checking import _STOCK
from . import stale_retry

# --- answering a flow whose response headers are overdue (proxy/timeouts.py)
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
#   with a response an addon sets in `request`. A stale keep-alive connection gets its request
#   sent once more (stale_retry.py). Every other error takes mitmproxy's own path.

OVERDUE_ANSWER = "_dispatcher_overdue_answer"  # on an HttpStream: its answer, once overdue


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
            if answer is None and stale_retry.may_retry(self, event):
                return stale_retry.resend_on_fresh_connection(self)
            if answer is None or not isinstance(event, ResponseProtocolError):
                return stock_handle_protocol_error(self, event)
            if not _waits_for_response_headers(self):
                return stock_handle_protocol_error(self, event)
            return _answer_overdue(self, event, answer)

        setattr(handle_protocol_error, _STOCK, stock_handle_protocol_error)
        HttpStream.handle_protocol_error = handle_protocol_error  # type: ignore[method-assign]


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
