"""mitmproxy's HTTP layers driven event by event, as its ConnectionHandler would drive them.

proxy = ClientConnection()
flow = proxy.request()              # a client's request; the router's host set
proxy.from_upstream(b"HTTP/1.1 200 OK\r\n...")
assert proxy.client_got().startswith(b"HTTP/1.1 200 ")
"""

from __future__ import annotations

import collections
import time

from mitmproxy import connection, http, options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode
from mitmproxy.proxy.mode_specs import ProxyMode

from sidecar_dispatcher import _mitmproxy as internals

# What mitmproxy's ConnectionHandler does around a client connection's layers is played here by
# hand: hooks complete at once (or when released), connections open at once (or when told),
# bytes sent are collected. The layers are mitmproxy's own.

UPSTREAM = ("upstream.test", 80)
REQUEST = b"GET /slow HTTP/1.1\r\nHost: sidecar.test\r\n\r\n"


class ClientConnection:
    """One reverse-mode client connection's HttpLayer, and what it asked the proxy to do."""

    def __init__(
        self,
        *,
        hold_connects: bool = False,
        upstream_alpn: bytes | None = None,
        client_alpn: bytes | None = None,
    ) -> None:
        opts = options.Options()
        Proxyserver().load(opts)
        self.client = connection.Client(
            peername=("127.0.0.1", 40000),
            sockname=("127.0.0.1", 5000),
            timestamp_start=time.time(),
            state=ConnectionState.OPEN,
            proxy_mode=ProxyMode.parse("reverse:http://127.0.0.1:8081"),
            alpn=client_alpn,
        )
        context = Context(self.client, opts)
        context.server.address = ("127.0.0.1", 8081)
        self.layer = HttpLayer(context, HTTPMode.transparent)
        self.hold_connects = hold_connects
        self.upstream_alpn = upstream_alpn
        self.sent: dict[connection.Connection, bytearray] = collections.defaultdict(bytearray)
        self.closed: list[connection.Connection] = []
        self.hooks: list[str] = []
        self.flows: list[http.HTTPFlow] = []
        self.held_hooks: list[commands.StartHook] | None = None  # None: hooks complete at once
        self.connects: list[commands.OpenConnection] = []
        self.deliveries: list[internals.Delivery] = []
        self.handle(events.Start())

    def handle(self, first: events.Event) -> None:
        queue: collections.deque[events.Event] = collections.deque([first])
        while queue:
            for command in self.layer.handle_event(queue.popleft()):
                if isinstance(command, commands.StartHook):
                    self.hooks.append(command.name)
                    flow = getattr(command, "flow", None)
                    if command.name == "requestheaders" and isinstance(flow, http.HTTPFlow):
                        flow.request.host, flow.request.port = UPSTREAM  # as the router does
                        self.flows.append(flow)
                    if self.held_hooks is not None:
                        self.held_hooks.append(command)
                    else:
                        queue.append(events.HookCompleted(command))
                elif isinstance(command, commands.OpenConnection):
                    self.connects.append(command)
                    if not self.hold_connects:
                        queue.append(self.connected(command))
                elif isinstance(command, commands.SendData):
                    self.sent[command.connection] += command.data
                elif isinstance(command, commands.CloseConnection):
                    self.closed.append(command.connection)
                    command.connection.state = ConnectionState.CLOSED
                elif not isinstance(command, commands.Log | commands.RequestWakeup):
                    raise AssertionError(f"unexpected command {command}")

    def connected(self, command: commands.OpenConnection) -> events.OpenConnectionCompleted:
        command.connection.state = ConnectionState.OPEN
        command.connection.timestamp_start = command.connection.timestamp_tcp_setup = time.time()
        command.connection.alpn = self.upstream_alpn
        return events.OpenConnectionCompleted(command, None)

    def complete_held_hook(self) -> str:
        """Complete the first hook held (those it leads to are held too); its name."""
        assert self.held_hooks, "no hook is held"
        hook = self.held_hooks.pop(0)
        self.handle(events.HookCompleted(hook))
        return hook.name

    def request(self, raw: bytes = REQUEST) -> http.HTTPFlow:
        self.handle(events.DataReceived(self.client, raw))
        return self.flows[-1]

    def overdue(self, flow: http.HTTPFlow) -> http.Response:
        answer = http.Response.make(504, b"too slow\n", {"Content-Type": "text/plain"})
        self.handle(
            internals.ResponseHeadersOverdue(flow, answer, "overdue", self.deliveries.append)
        )
        return answer

    @property
    def upstream(self) -> connection.Server:
        server = self.connects[-1].connection
        assert isinstance(server, connection.Server)
        return server

    def from_upstream(self, raw: bytes) -> None:
        self.handle(events.DataReceived(self.upstream, raw))

    def upstream_closes(self) -> None:
        """The destination closes the connection (FIN), as mitmproxy reports it."""
        server = self.upstream
        server.state = ConnectionState.CAN_WRITE
        self.handle(events.ConnectionClosed(server))

    def client_got(self) -> bytes:
        return bytes(self.sent[self.client])
