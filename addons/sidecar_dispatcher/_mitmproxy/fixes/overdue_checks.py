"""The checks of the upstream timeout's reaches: the methods wrapped and the source they rely on.

OVERDUE_REACHES   # run by the runner at start-up, and by UpstreamTimeouts under mitmdump
"""

from __future__ import annotations

import inspect

from mitmproxy import master
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import layer, server
from mitmproxy.proxy.layers.http import (
    HttpLayer,
    HttpStream,
    _http1,
    _http2,
)

from ..checking import Reach, check_wrappable, first_problem, source_lacks, stock_method


def _check_inject_event(_lean: master.Master) -> str | None:
    inject = getattr(proxyserver.Proxyserver, "inject_event", None)
    if inject is None:
        return "Proxyserver has no inject_event() method"
    if list(inspect.signature(inject).parameters) != ["self", "event"]:
        return f"Proxyserver.inject_event{inspect.signature(inject)} is not (self, event)"
    return source_lacks(inject, STOCK_INJECT_EVENT)


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
    return first_problem(
        lambda: check_wrappable(HttpLayer, "_handle_event", ["self", "event"]),
        *(
            lambda name=name, fragments=fragments: source_lacks(
                stock_method(getattr(HttpLayer, name)), fragments
            )
            for name, fragments in STOCK_HTTP_LAYER.items()
        ),
        lambda: source_lacks(layer.Layer.handle_event, STOCK_LAYER_PAUSE),
        lambda: None if "command" in layer.Paused._fields else "layer.Paused has no command",
    )


def _check_http_stream(_lean: master.Master) -> str | None:
    return first_problem(
        lambda: check_wrappable(HttpStream, "handle_protocol_error", ["self", "event"]),
        *(
            lambda name=name, fragments=fragments: source_lacks(
                getattr(HttpStream, name), fragments
            )
            for name, fragments in STOCK_HTTP_STREAM.items()
        ),
        lambda: source_lacks(_http1.Http1Client.send, STOCK_HTTP1_CLIENT_SEND),
        lambda: source_lacks(_http2.Http2Connection._handle_event, STOCK_HTTP2_CONNECTION),
        lambda: None if callable(HttpStream.state_errored) else "HttpStream has no state_errored",
    )


def _check_connect_cancel(_lean: master.Master) -> str | None:
    return first_problem(
        lambda: source_lacks(server.ConnectionHandler.open_connection, STOCK_OPEN_CONNECTION),
        lambda: source_lacks(server.ConnectionHandler.close_connection, STOCK_CLOSE_CONNECTION),
    )


OVERDUE_REACHES = (
    Reach("Proxyserver.inject_event()", _check_inject_event, for_timeouts=True),
    Reach("HttpLayer._handle_event (wrapped)", _check_http_layer, for_timeouts=True),
    Reach("HttpStream.handle_protocol_error (wrapped)", _check_http_stream, for_timeouts=True),
    Reach(
        "ConnectionHandler.open_connection (cut short)", _check_connect_cancel, for_timeouts=True
    ),
)
