"""CPU time the dispatcher's hooks take per request, in one process, by what is switched on.

    .venv/bin/python -O -m bench.hook_cost [--rounds 15] [--flows 2000]   # prints JSON

Throughput through a real runner moves by 10-30 % between rounds on this shared machine, more
than the few percent an observer costs. Here the same `Dispatcher` handles synthetic flows
(`requestheaders`, then `response`, as mitmproxy calls them) under each setting in turn, in
alternating rounds, and the medians are compared: the cost of metrics and of the access log in
microseconds per request, to set against the runner's whole CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mitmproxy import http, master, options
from mitmproxy.addons import proxyserver, termlog
from mitmproxy.proxy.layers.http import (  # type: ignore[attr-defined]  # not in its __all__
    HttpRequestHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import tflow

from sidecar_dispatcher import Dispatcher
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="seed")
    arguments = parser.parse_args()
    costs = asyncio.run(measure(arguments.rounds, arguments.flows, arguments.config))
    print(json.dumps(costs))


if __name__ == "__main__":
    main()
