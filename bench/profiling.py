"""Where the CPU goes per request: py-spy samples a peer while wrk saturates it.

py-spy attaches to the running process (no restart, no code change) and samples its Python
stacks; it runs on the load core, beside wrk. It pauses the process for each sample: without
the pause (`--nonblocking`) most stacks come out truncated, which spoils inclusive shares.
Each peer is profiled on its own, so that only one process is loaded at a time.
"""

from __future__ import annotations

import datetime
import logging
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import Bench
from .machine import describe, describe_markdown
from .measure import KEEPALIVE, run_wrk, run_wrk_once
from .peers import SUITE_PEERS, RunningPeer
from .processes import Managed, Pinning
from .report import markdown_table

logger = logging.getLogger(__name__)

PROFILED = ("mitmdump-addon", "runner-1")
TOP = 20
SAMPLING_RATE = 200  # per second

# Where a sample is, by the frames on its stack (inclusive: a frame anywhere counts).
AREAS = {
    "addon hooks (AddonManager.handle_lifecycle / trigger_event)": r"addonmanager\.py",
    # the addon's modules, not the runner's (every runner stack starts in runner/serve.py)
    "our addon (sidecar_dispatcher)": r"sidecar_dispatcher/(?!cli|runner|__main__)",
    "logging (records, handlers, termlog)": r"/logging/|addons/termlog\.py",
    "mitmdump's flow printing (dumper)": r"addons/dumper\.py",
    "proxy layers (mitmproxy/proxy)": r"mitmproxy/proxy/",
    "HTTP/1 reading and assembly": r"http1|_http1\.py",
    "flow objects (mitmproxy/http.py, flow.py)": r"mitmproxy/(http|flow)\.py",
    "asyncio streams and transports": r"asyncio/(streams|selector_events)\.py",
    "mitmproxy's `__debug__` checks (typecheck, @expect; gone with python -O)": (
        r"utils/typecheck\.py|proxy/utils\.py"
    ),
    "flow ids (uuid4)": r"uuid\.py",
}
TRUNK = 99.0  # inclusive shares above this are the event loop's own frames: left out


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    return found


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def name(self) -> str:
        return f"{self.function} ({self.file})"


FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")


def parse_frame(text: str) -> Frame:
    match = FRAME.match(text)
    if not match:
        return Frame(text, "")
    file = match.group("file")
    for marker in ("site-packages/", "/lib/python3.13/", "/addons/"):  # shorter, still unique
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker == "/addons/":
                file = f"addons/{file}"
            break
    return Frame(match.group("function"), file)


def parse_collapsed(text: str) -> list[tuple[list[Frame], int]]:
    """py-spy's raw format: one `frame;frame;...;leaf count` line per distinct stack."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def summarize(stacks: list[tuple[list[Frame], int]]) -> dict[str, Any]:
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1].name] += count
        for name in {frame.name for frame in frames}:
            inclusive[name] += count
        files = " ".join(frame.file for frame in frames)
        for area, pattern in AREAS.items():
            if re.search(pattern, files):
                areas[area] += count

    def share(counter: Counter[str], top: int | None = TOP) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / total, 1)}
            for name, n in counter.most_common(top)
        ]

    branches = Counter({k: v for k, v in inclusive.items() if 100 * v / total < TRUNK})
    return {
        "samples": total,
        "own": share(own),
        "inclusive": share(branches),
        "areas": share(areas, None),
    }


def profile(bench: Bench, running: RunningPeer, seconds: float, quick: bool) -> dict[str, Any]:
    assert running.process is not None
    output = bench.workdir / f"{running.peer.name}.collapsed.txt"
    run_wrk_once(bench, running, KEEPALIVE, 2)  # warm-up: first connections, caches
    unprofiled = run_wrk(bench, running, KEEPALIVE, seconds, patient=not quick)
    argv = [
        py_spy(),
        "record",
        "--pid",
        str(running.process.pid),
        "--duration",
        str(round(seconds)),
    ]
    argv += ["--rate", str(SAMPLING_RATE), "--nolineno", "--format", "raw"]
    argv += ["--output", str(output)]
    sampler = Managed(
        "py-spy", argv, log_path=bench.workdir / "py-spy.log", cpus=bench.pinning.load
    )
    sampler.start()
    try:
        profiled = run_wrk_once(bench, running, KEEPALIVE, seconds + 2)
        deadline = time.monotonic() + 30
        while sampler.running() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sampler.stop()
    if not output.exists():
        raise RuntimeError(f"py-spy wrote no profile:\n{sampler.logs()}")
    summary = summarize(parse_collapsed(output.read_text()))
    logger.info("profiled %s: %d samples", running.peer.name, summary["samples"])
    return {
        "rate_without_profiler": unprofiled["rate"],
        "rate_while_profiled": profiled["rate"],
        "proxy_cores": unprofiled["proxy_cores"],
        **summary,
        "collapsed": output.read_text(),
    }


def run_profiles(quick: bool, pinning: Pinning) -> dict[str, Any]:
    started = time.monotonic()
    seconds = 3.0 if quick else 20.0
    peers = {peer.name: peer for peer in SUITE_PEERS}
    results = {}
    with Bench(pinning) as bench:
        for name in PROFILED:
            (running,) = bench.start([peers[name]])
            results[name] = profile(bench, running, seconds, quick)
            assert running.process is not None
            running.process.stop()
    return {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": describe(),
        "method": {
            "seconds": seconds,
            "sampling_rate": SAMPLING_RATE,
            "pinning": pinning.describe(),
            "load": KEEPALIVE.label,
        },
        "profiles": results,
        "seconds": round(time.monotonic() - started, 1),
    }


def markdown(document: dict[str, Any], command: str) -> str:
    sections = []
    for name, found in document["profiles"].items():

        def rows(entries: list[dict[str, Any]]) -> list[list[str]]:
            return [[f"{e['percent']:.1f} %", f"`{e['function']}`"] for e in entries]

        sections.append(
            f"""## `{name}`

{found["samples"]:,} samples; {found["rate_without_profiler"]:,.0f} req/s without the profiler
({found["proxy_cores"]:.2f} cores busy), {found["rate_while_profiled"]:,.0f} req/s while profiled.

Where the samples are (a sample counts in every area whose code is on its stack):

{markdown_table(["share", "area"], rows(found["areas"]))}

Top {TOP}, own time (the function at the top of the stack):

{markdown_table(["share", "function"], rows(found["own"]))}

Top {TOP}, inclusive (the function anywhere on the stack; the event loop's frames, on every
stack, left out):

{markdown_table(["share", "function"], rows(found["inclusive"]))}
"""
        )
    method = document["method"]
    body = "\n".join(sections)
    return f"""# Profile ({document["mode"]} mode, {document["generated"]})

Machine: {describe_markdown(document["machine"])}.
py-spy at {method["sampling_rate"]} Hz for {method["seconds"]:g} s per peer,
under wrk ({method["load"]}); {method["pinning"]}.
Reproduce: `{command}` ({document["seconds"]:.0f} s).

{body}"""
