"""CPU time the dispatcher's hooks take per request, in one process, by what is switched on.

    .venv/bin/python -O -m bench.hook_cost [--rounds 15] [--flows 2000]   # prints JSON
    .venv/bin/python -O -m bench.hook_cost --path     # mitmproxy's hook path against the runner's

Throughput through a real runner moves by 10-30 % between rounds on this shared machine, more
than the few percent an observer costs. Here the same `Dispatcher` handles synthetic flows
(`requestheaders`, then `response`, as mitmproxy calls them) under each setting in turn, in
alternating rounds, and the medians are compared: the cost of metrics and of the access log in
microseconds per request, to set against the runner's whole CPU time per request.

`--path` measures the hook path itself: the four HTTP hooks of each request started by a layer
of a real connection handler (`ProxyConnectionHandler`) with the runner's addons, completed the
way mitmproxy completes them (`stock`: a task per hook, each completion waiting for the
connection's lock) or the way the runner does (`fast`: _mitmproxy/speed/fast_hooks.py), in
alternating rounds; microseconds per request, the Dispatcher's own work included.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mitmproxy import http, master, options
from mitmproxy.addons import proxyserver, termlog
from mitmproxy.proxy import events, layer, mode_servers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import (  # type: ignore[attr-defined]  # not in its __all__
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow
from mitmproxy.utils import asyncio_utils

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher._mitmproxy.speed import fast_hooks
from sidecar_dispatcher.runner.serve import lean_addons
from sidecar_dispatcher.testing.configs import dispatch_config, many_routes

# Admin port 0: metrics on, on a port nobody asks; the listener is never started here.
SETTINGS = {
    "off": {"dispatcher_admin": "", "dispatcher_access_log": "off"},
    "metrics": {"dispatcher_admin": "127.0.0.1:0", "dispatcher_access_log": "off"},
    "text-log": {"dispatcher_admin": "", "dispatcher_access_log": "text"},
    "metrics+text-log": {"dispatcher_admin": "127.0.0.1:0", "dispatcher_access_log": "text"},
    "metrics+json-log": {"dispatcher_admin": "127.0.0.1:0", "dispatcher_access_log": "json"},
}


CONFIGS = {"seed": 0, "routes100": 100}


async def measure(rounds: int, flows: int, config_name: str = "seed") -> dict[str, float]:
    """Median microseconds per request of each setting."""
    folder = Path(tempfile.mkdtemp(prefix="hook-cost-"))
    config = folder / "config.yaml"
    text = dispatch_config("http://127.0.0.1:8081", qa="http://127.0.0.1:8082")
    if CONFIGS[config_name]:
        text += many_routes(CONFIGS[config_name])
    config.write_text(text)
    opts = options.Options()
    lean = master.Master(opts, event_loop=asyncio.get_running_loop(), with_termlog=False)
    lean._legacy_log_events.uninstall()  # as the runner does
    sink = (folder / "log").open("w")
    dispatcher = Dispatcher()
    lean.addons.add(termlog.TermLog(out=sink), proxyserver.Proxyserver(), dispatcher)
    logging.getLogger().setLevel(logging.DEBUG)  # as the runner does: handlers filter
    opts.update(dispatcher_config=str(config))
    answer = http.Response.make(200, b"hello")
    samples: dict[str, list[float]] = {name: [] for name in SETTINGS}
    stdout, sys.stdout = sys.stdout, sink  # json lines go to stdout: not ours to print
    try:
        for number in range(rounds):
            order = list(SETTINGS) if number % 2 == 0 else list(reversed(SETTINGS))
            for name in order:
                opts.update(**SETTINGS[name])
                batch = []
                for _ in range(flows):
                    flow = tflow.tflow()
                    flow.request.headers["environment"] = "qa"
                    flow.request.timestamp_start = time.time()
                    batch.append(flow)
                started = time.perf_counter()
                for flow in batch:
                    lean.addons.invoke_addon_sync(dispatcher, HttpRequestHeadersHook(flow))
                    flow.response = answer
                    lean.addons.invoke_addon_sync(dispatcher, HttpResponseHook(flow))
                samples[name].append((time.perf_counter() - started) / flows * 1e6)
    finally:
        sys.stdout = stdout
        opts.update(**SETTINGS["off"])
        sink.close()
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


class Requests(layer.Layer):
    """Each DataReceived is a request: its four HTTP hooks in turn, as an HTTP stream runs them."""

    def __init__(self, context: Context, make_flow: Callable[[], http.HTTPFlow]) -> None:
        super().__init__(context)
        self.make_flow = make_flow
        self.answered: Callable[[], None] = lambda: None

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.DataReceived):
            flow = self.make_flow()
            yield HttpRequestHeadersHook(flow)
            yield HttpRequestHook(flow)
            flow.response = http.Response.make(200, b"hello")
            flow.response.timestamp_start = time.time()
            yield HttpResponseHeadersHook(flow)
            yield HttpResponseHook(flow)
            self.answered()


class Transport:
    """A client connection's reader and writer that are never used."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 5000)}.get(
            name, default
        )


async def measure_path(rounds: int, requests: int) -> dict[str, float]:
    """Median microseconds per request through mitmproxy's hook path and the runner's."""
    folder = Path(tempfile.mkdtemp(prefix="hook-path-"))
    config = folder / "config.yaml"
    config.write_text(dispatch_config("http://127.0.0.1:8081", qa="http://127.0.0.1:8082"))
    opts = options.Options()
    lean = master.Master(opts, event_loop=asyncio.get_running_loop(), with_termlog=False)
    lean._legacy_log_events.uninstall()  # as the runner does
    sink = (folder / "log").open("w")
    lean.addons.add(termlog.TermLog(out=sink), *lean_addons(), Dispatcher())
    logging.getLogger().setLevel(logging.DEBUG)  # as the runner does: handlers filter
    opts.update(
        dispatcher_config=str(config),
        confdir=str(folder),
        dispatcher_admin="",
        dispatcher_access_log="text",
    )
    table = fast_hooks.use_fast_hooks(lean)
    handler = mode_servers.ProxyConnectionHandler(
        lean, Transport(), Transport(), opts, ProxyMode.parse("reverse:http://127.0.0.1:8081")
    )

    batch: list[http.HTTPFlow] = []  # made before each timed round: their cost is not the path's
    requests_layer = Requests(handler.layer.context, batch.pop)
    handler.layer = requests_layer
    data = events.DataReceived(handler.client, b"GET / HTTP/1.1\r\n\r\n")
    samples: dict[str, list[float]] = {"stock": [], "fast": []}
    loop = asyncio.get_running_loop()
    with asyncio_utils.set_eager_task_factory():  # as Master.run
        for number in range(rounds):
            order = ["stock", "fast"] if number % 2 == 0 else ["fast", "stock"]
            for name in order:
                # Without the table, the replaced server_event is mitmproxy's own.
                if name == "fast":
                    setattr(lean.addons, fast_hooks._TABLE, table)
                else:
                    vars(lean.addons).pop(fast_hooks._TABLE, None)
                for _ in range(requests):
                    flow = tflow.tflow()
                    flow.request.headers["environment"] = "qa"
                    flow.request.timestamp_start = time.time()
                    batch.append(flow)
                started = time.perf_counter()
                for _ in range(requests):
                    answered: asyncio.Future[None] = loop.create_future()
                    requests_layer.answered = functools.partial(answered.set_result, None)
                    await handler.server_event(data)
                    await answered
                samples[name].append((time.perf_counter() - started) / requests * 1e6)
    sink.close()
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="seed")
    parser.add_argument("--path", action="store_true", help="the hook path: stock against fast")
    arguments = parser.parse_args()
    if arguments.path:
        costs = asyncio.run(measure_path(arguments.rounds, arguments.flows))
    else:
        costs = asyncio.run(measure(arguments.rounds, arguments.flows, arguments.config))
    print(json.dumps(costs))


if __name__ == "__main__":
    main()
