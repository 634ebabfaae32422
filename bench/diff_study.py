"""What `sidecar-dispatcher diff` costs: time and peak memory over 10,000 and 100,000 flows.

    .venv/bin/python bench/run.py diff [--quick]     # -> results/diff.{json,md}

The recording is made once: `tflow`-shaped flows (a client and a server connection with their
TLS fields, a response) with varied key headers, paths and X-Forwarded-For, dispatched by the
`Dispatcher` in a mitmproxy master exactly as the sidecar dispatches (so each carries its decision
and the client's request), and written with mitmproxy's `FlowWriter`. A unit of 10,000 distinct
flows is written; the larger file repeats it. Each run is the command as users run it, in a child
process pinned to the proxy's core; its wall time and its peak RSS (`ru_maxrss` of the child, from
`resource.getrusage` in a small launcher) are taken. mitmproxy's own `FlowReader` over the unit,
building every flow, is the reference for the reading alone.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy import http, master, options
from mitmproxy.addons import proxyserver
from mitmproxy.io import FlowWriter
from mitmproxy.proxy.layers.http import (  # type: ignore[attr-defined]  # not in its __all__
    HttpRequestHeadersHook,
)
from mitmproxy.test import tflow

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher.testing.configs import dispatch_config

from .machine import describe, describe_markdown
from .processes import Pinning, pinned
from .report import markdown_table

logger = logging.getLogger(__name__)

UNIT = 10_000  # distinct flows; larger recordings repeat them
OLD = dispatch_config(
    "http://default.test:8081", dev="http://dev.test:8082/base", qa="http://qa.test:8083"
)
NEW = OLD.replace("http://qa.test:8083", "http://qa-v2.test:8083")  # qa moves
KEYS = ("qa", "qa", "dev", None, None, None, "prod")
READ_WITH_FLOWREADER = """
import sys
from mitmproxy.io import FlowReader
with open(sys.argv[1], "rb") as file:
    count = sum(1 for _ in FlowReader(file).stream())
print('{"total": %d, "changed": null}' % count)
"""


async def dispatch_and_write(path: Path, config: Path, count: int) -> None:
    """`count` flows through the Dispatcher's hooks, written as `mitmdump -w` writes them."""
    opts = options.Options()
    lean = master.Master(opts, event_loop=asyncio.get_running_loop(), with_termlog=False)
    lean._legacy_log_events.uninstall()
    dispatcher = Dispatcher()
    lean.addons.add(proxyserver.Proxyserver(), dispatcher)
    opts.update(
        dispatcher_config=str(config),
        dispatcher_watch=False,
        dispatcher_admin="",
        dispatcher_access_log="off",
    )
    draw = random.Random(7)
    with path.open("wb") as file:
        writer = FlowWriter(file)
        for number in range(count):
            flow = tflow.tflow()
            request = flow.request
            request.headers["Host"] = "reverse.target:8081"
            request.path = f"/api/items/{number % 97}?page={number % 5}"
            request.method = draw.choice(("GET", "GET", "GET", "POST"))
            if (key := draw.choice(KEYS)) is not None:
                request.headers["environment"] = key
            if number % 4 == 0:
                request.headers["X-Forwarded-For"] = "203.0.113.9"
            lean.addons.invoke_addon_sync(dispatcher, HttpRequestHeadersHook(flow))
            flow.response = http.Response.make(200, b"recorded")
            writer.add(flow)


def repeat(unit: Path, times: int, path: Path) -> None:
    with path.open("wb") as target:
        for _ in range(times):
            with unit.open("rb") as source:
                shutil.copyfileobj(source, target)


# The child is started by this small launcher, not by the benchmark itself: Linux counts in a
# child's ru_maxrss the peak of the process it was forked from (the benchmark's own, with
# mitmproxy loaded), so a bare Python's ~10 MiB is the floor here instead.
LAUNCHER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as report:
    json.dump({"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss, "exit": done.returncode,
               "out": done.stdout.decode(), "err": done.stderr.decode(errors="replace")}, report)
"""


def run_child(argv: list[str], pinning: Pinning, folder: Path) -> dict[str, Any]:
    """Wall seconds, CPU seconds and peak RSS of one child, and what it printed."""
    report = folder / "child.json"
    launcher = [sys.executable, "-c", LAUNCHER, str(report), *pinned(argv, pinning.proxy)]
    subprocess.run(launcher, check=True, timeout=600)
    child = json.loads(report.read_text())
    if child["exit"] not in (0, 1):
        raise RuntimeError(f"{argv} exited {child['exit']}: {child['err']}")
    printed = json.loads(child["out"])
    return {
        "seconds": round(child["seconds"], 2),
        "cpu_seconds": round(child["cpu"], 2),
        "peak_rss_mib": round(child["maxrss_kib"] / 1024, 1),  # KiB on Linux
        "total": printed["total"],
        "changed": printed["changed"],
        "exit": child["exit"],
    }


def run_diff_study(quick: bool, pinning: Pinning) -> dict[str, Any]:
    started = time.monotonic()
    unit_size = 1_000 if quick else UNIT
    sizes = (unit_size, unit_size * 10)
    repeats = 1 if quick else 3
    folder = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    try:
        old, new = folder / "old.yaml", folder / "new.yaml"
        old.write_text(OLD)
        new.write_text(NEW)
        unit = folder / f"{unit_size}.flows"
        asyncio.run(dispatch_and_write(unit, old, unit_size))
        recordings = {unit_size: unit, sizes[1]: folder / f"{sizes[1]}.flows"}
        repeat(unit, 10, recordings[sizes[1]])
        diff = [sys.executable, "-m", "sidecar_dispatcher", "diff", "--json", "--config", str(new)]
        runs: list[dict[str, Any]] = []
        for size, path in recordings.items():
            variants = {
                "recorded decisions": [*diff, "--flows", str(path)],
                "--against OLD.yaml": [*diff, "--flows", str(path), "--against", str(old)],
            }
            if size == unit_size:
                reader = [sys.executable, "-c", READ_WITH_FLOWREADER, str(path)]
                variants["mitmproxy FlowReader alone"] = reader
            for name, argv in variants.items():
                samples = [run_child(argv, pinning, folder) for _ in range(repeats)]
                best = min(samples, key=lambda sample: sample["seconds"])
                run = {
                    "flows": size,
                    "what": name,
                    "file_mib": round(path.stat().st_size / 2**20, 1),
                    "median_seconds": statistics.median(s["seconds"] for s in samples),
                    **best,
                    "peak_rss_mib": max(s["peak_rss_mib"] for s in samples),
                }
                logger.info(
                    "%7d flows %-28s %6.2f s %6.1f MiB",
                    size,
                    name,
                    run["median_seconds"],
                    run["peak_rss_mib"],
                )
                runs.append(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": describe(),
        "method": {"repeats": repeats, "unit": unit_size, "pinning": pinned_to(pinning)},
        "diff_runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    }


def pinned_to(pinning: Pinning) -> str:
    return f"pinned to core {pinning.proxy}" if pinning.proxy else "not pinned"


def markdown(document: dict[str, Any], command: str) -> str:
    rows = [
        [
            f"{run['flows']:,}",
            run["what"],
            f"{run['file_mib']}",
            f"{run['median_seconds']:.2f}",
            f"{run['flows'] / run['median_seconds']:,.0f}",
            f"{run['peak_rss_mib']}",
            "–" if run["changed"] is None else f"{run['changed']:,} of {run['total']:,}",
        ]
        for run in document["diff_runs"]
    ]
    header = [
        "flows",
        "run",
        "file, MiB",
        "seconds (median)",
        "flows/s",
        "peak RSS, MiB",
        "would change",
    ]
    method = document["method"]
    return f"""# What `diff` costs ({document["mode"]} mode, {document["generated"]})

Machine: {describe_markdown(document["machine"])}.
Method: a recording of {method["unit"]:,} distinct flows dispatched by the `Dispatcher` and
written with `FlowWriter`, repeated ×10 for the larger file; `sidecar-dispatcher diff --json`
(a config moving the `qa` rule) in a child process {method["pinning"]}; median of
{method["repeats"]} runs, peak RSS the largest of them (`ru_maxrss` of the child, `getrusage`).
Reproduce: `{command}`.

{markdown_table(header, rows)}
"""
