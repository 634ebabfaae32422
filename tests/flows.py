"""The dispatcher inside mitmproxy's test harness: flows and hooks in, as mitmproxy sends them.

def test_something(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    harness.hook(HttpResponseHook(answer(flow)))
"""

from __future__ import annotations

from mitmproxy import hooks, http
from mitmproxy.proxy.layers.http import (  # type: ignore[attr-defined]  # not in its __all__
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher.testing.configs import dispatch_config

__all__ = ["HttpErrorHook", "HttpRequestHeadersHook", "HttpResponseHook"]

CONFIG = dispatch_config(
    "http://default.test:8081", dev="http://dev.test:8082/base", token="https://secure.test"
)


def make_flow(
    *headers: tuple[str, str],
    path: str = "/x?q=1",
    http2: bool = False,
    host: str = "reverse.target:8081",
) -> http.HTTPFlow:
    """A request as mitmproxy hands it to requestheaders in reverse mode."""
    flow = tflow.tflow()
    request = flow.request
    request.host, request.port = "reverse.target", 8081
    if http2:
        request.http_version = "HTTP/2.0"
        request.authority = host
    else:
        request.headers["Host"] = host
    request.path = path
    for name, value in headers:
        request.headers.add(name, value)
    return flow


def body(flow: http.HTTPFlow) -> bytes:
    assert flow.response is not None
    return flow.response.content or b""


def invoke(tctx: taddons.context, addon: object, hook: hooks.Hook) -> None:
    """Send one hook to the addon and the parts it holds, as mitmproxy does."""
    tctx.master.addons.invoke_addon_sync(addon, hook)


class Harness:
    def __init__(self, tctx: taddons.context, dispatcher: Dispatcher) -> None:
        self.tctx = tctx
        self.dispatcher = dispatcher

    def dispatch(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        invoke(self.tctx, self.dispatcher, HttpRequestHeadersHook(flow))
        return flow

    def hook(self, hook: hooks.Hook) -> None:
        invoke(self.tctx, self.dispatcher, hook)


def answer(flow: http.HTTPFlow, status: int = 200, seconds: float = 0.0125) -> http.HTTPFlow:
    """The destination's response, `seconds` after the request headers arrived."""
    flow.request.timestamp_start = 1000.0
    flow.response = http.Response.make(status, b"upstream says hi")
    flow.response.timestamp_end = 1000.0 + seconds
    return flow
