"""Measurements over running peers: wrk workloads and k6 in alternating rounds, and memory.

Alternation: each round visits every peer once per workload, in reverse order every other
round, so that a slow drift of the machine (another tenant, thermal state) spreads over all
peers instead of landing on one. Medians over the rounds are reported.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .environment import Bench, settle
from .load import KEY_HEADER, K6Form, WrkResult, k6, wrk
from .nginx import LARGE_PATH
from .peers import Peer, RunningPeer
from .processes import machine_busy_seconds, rss_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    path: str
    headers: tuple[str, ...]
    connections: int = 32


KEEPALIVE = Workload(
    "keepalive", "max throughput: 32 keep-alive connections, small body", "/", (KEY_HEADER,)
)
CLOSE = Workload(
    "close", "a new connection per request (32 at a time)", "/", (KEY_HEADER, "Connection: close")
)
LARGE = Workload(
    "body100k", "100 KB response, 32 keep-alive connections", LARGE_PATH, (KEY_HEADER,)
)
WORKLOADS = (KEEPALIVE, CLOSE, LARGE)


def alternating(items: Sequence[RunningPeer], round_number: int) -> list[RunningPeer]:
    return list(items) if round_number % 2 == 0 else list(reversed(items))


# Another tenant's burst (a test suite, a build) can halve a run. Before each run the bench
# waits (up to QUIET_WAIT seconds) until the machine is idle but for the peers; a run during
# which other processes kept more than QUIET_LIMIT of a core busy is measured once more, and
# the quieter attempt is kept. Every run records how busy the rest of the machine was.
QUIET_LIMIT = 0.25  # cores
MIB = 2**20
QUIET_WAIT = 20.0  # seconds


def wait_for_quiet(max_wait: float) -> float:
    """Seconds waited until the machine (idle peers included) used less than QUIET_LIMIT."""
    started = time.monotonic()
    while time.monotonic() - started < max_wait:
        before = machine_busy_seconds()
        time.sleep(1.0)
        if machine_busy_seconds() - before < QUIET_LIMIT:
            break
    return round(time.monotonic() - started, 1)


def ensure_alive(running: RunningPeer) -> None:
    """A peer that exited mid-run would be measured as a wall of connection errors: stop instead,
    with its last words."""
    process = running.process
    if process is not None and not process.running():
        raise RuntimeError(f"{running.peer.name} exited during the run:\n{process.logs()[-3000:]}")


def run_wrk(
    bench: Bench, running: RunningPeer, workload: Workload, seconds: float, *, patient: bool
) -> dict[str, Any]:
    """One wrk run in a quiet moment; when `patient`, waits for one and retries once."""
    attempts = []
    for _ in range(2 if patient else 1):
        waited = wait_for_quiet(QUIET_WAIT) if patient else 0.0
        attempts.append({**run_wrk_once(bench, running, workload, seconds), "waited": waited})
        ensure_alive(running)
        if attempts[-1]["other_cores"] <= QUIET_LIMIT:
            break
        logger.info(
            "%s %s: other processes used %.2f cores during the run",
            running.peer.name,
            workload.name,
            attempts[-1]["other_cores"],
        )
    quietest = min(attempts, key=lambda attempt: attempt["other_cores"])
    return {**quietest, "attempts": len(attempts)}


def wrk_on(bench: Bench, running: RunningPeer, workload: Workload, seconds: float) -> WrkResult:
    """wrk against one peer, from the load side's core, as the workload says."""
    return wrk(
        f"http://127.0.0.1:{running.port}{workload.path}",
        connections=workload.connections,
        seconds=seconds,
        headers=workload.headers,
        cpus=bench.pinning.load,
    )


def run_wrk_once(
    bench: Bench, running: RunningPeer, workload: Workload, seconds: float
) -> dict[str, Any]:
    """One wrk run against one peer, with the CPU the proxy and the load side used meanwhile."""
    busy_before = machine_busy_seconds()
    proxy_before, upstream_before = running.cpu_seconds(), bench.upstream_cpu_seconds()
    result = wrk_on(bench, running, workload, seconds)
    proxy_cpu = running.cpu_seconds() - proxy_before
    upstream_cpu = bench.upstream_cpu_seconds() - upstream_before
    busy = machine_busy_seconds() - busy_before
    wall = result.seconds or seconds
    ours = proxy_cpu + upstream_cpu + result.generator_cpu
    return {
        **result.as_dict(),
        "proxy_cores": round(proxy_cpu / wall, 3),
        # wrk and the upstream share the load core; `direct` has no proxy, so its upstream
        # CPU is the "proxy" here too and counted once.
        "load_cores": round((result.generator_cpu + upstream_cpu) / wall, 3),
        # everything else: other processes, and kernel work no process is charged with
        "other_cores": round(max(0.0, busy - ours) / wall, 3),
    }


def summarize_wrk(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rate": round(statistics.median(r["rate"] for r in runs), 1),
        "rate_min": min(r["rate"] for r in runs),
        "rate_max": max(r["rate"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "mb_per_s": round(statistics.median(r["bytes"] / r["seconds"] / 1e6 for r in runs), 1),
        "latency_p50_ms": round(statistics.median(r["latency_p50_ms"] for r in runs), 2),
        "latency_p99_ms": round(statistics.median(r["latency_p99_ms"] for r in runs), 2),
        "proxy_cores": round(statistics.median(r["proxy_cores"] for r in runs), 2),
        "load_cores": round(statistics.median(r["load_cores"] for r in runs), 2),
        "other_cores": round(statistics.median(r["other_cores"] for r in runs), 2),
        "rounds": runs,
    }


def throughput_rounds(
    bench: Bench,
    running: Sequence[RunningPeer],
    workloads: Sequence[Workload],
    *,
    rounds: int,
    seconds: float,
    patient: bool,
) -> dict[str, dict[str, Any]]:
    """{peer: {workload: summary}} from `rounds` alternating rounds of wrk."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for number in range(rounds):
        for workload in workloads:
            for peer in alternating(running, number):
                result = run_wrk(bench, peer, workload, seconds, patient=patient)
                runs.setdefault((peer.peer.name, workload.name), []).append(result)
                logger.info(
                    "round %d/%d %-10s %-22s %9.1f req/s  errors %d  non-2xx %d",
                    number + 1,
                    rounds,
                    workload.name,
                    peer.peer.name,
                    result["rate"],
                    result["errors"],
                    result["non_2xx"],
                )
    results: dict[str, dict[str, Any]] = {}
    for (peer_name, workload_name), peer_runs in runs.items():
        results.setdefault(peer_name, {})[workload_name] = summarize_wrk(peer_runs)
    return results


def k6_rounds(
    bench: Bench,
    running: Sequence[RunningPeer],
    form: K6Form,
    *,
    rounds: int,
    patient: bool,
) -> dict[str, dict[str, Any]]:
    """{peer: summary} of one form of the original project's k6 profile, alternating like wrk."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for number in range(rounds):
        for peer in alternating(running, number):
            url = f"http://127.0.0.1:{peer.port}/"
            if patient:
                wait_for_quiet(QUIET_WAIT)
            result = k6(url, form, cpus=bench.pinning.load)
            ensure_alive(peer)
            runs.setdefault(peer.peer.name, []).append(result.as_dict())
            logger.info(
                "k6 %s round %d/%d %-22s %6d requests  p95 %7.1f ms  failed checks %d",
                form.name,
                number + 1,
                rounds,
                peer.peer.name,
                result.requests,
                result.p95_ms,
                result.failed_checks,
            )
    return {name: summarize_k6(peer_runs) for name, peer_runs in runs.items()}


def summarize_k6(peer_runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        **{
            key: round(statistics.median(r[key] for r in peer_runs), 2)
            for key in ("p50_ms", "p90_ms", "p95_ms")
        },
        "max_ms": max(r["max_ms"] for r in peer_runs),
        "requests": sum(r["requests"] for r in peer_runs),
        "requests_hold": sum(r["requests_hold"] for r in peer_runs),
        "failed_checks": sum(r["failed_checks"] for r in peer_runs),
        "passed_checks": sum(r["passed_checks"] for r in peer_runs),
        "failed_requests": sum(r["failed_requests"] for r in peer_runs),
        "rounds": peer_runs,
    }
    bursts = [r for r in peer_runs if r.get("burst_p95_ms") is not None]
    if bursts:  # the spike's first second
        summary["burst_p95_ms"] = round(statistics.median(r["burst_p95_ms"] for r in bursts), 2)
        summary["burst_max_ms"] = max(r["burst_max_ms"] for r in bursts)
    return summary


def send_requests(bench: Bench, running: RunningPeer, count: int) -> int:
    """At least `count` keep-alive requests, in wrk runs sized from the rate seen so far."""
    sent, rate, runs = 0, 0.0, 0
    while sent < count:
        seconds = 1.0 if not rate else min(30.0, max(1.0, (count - sent) / rate + 0.5))
        result = wrk_on(bench, running, KEEPALIVE, seconds)
        if result.errors or result.non_2xx:
            raise RuntimeError(f"{running.peer.name}: errors while sending requests: {result}")
        sent, rate, runs = sent + result.requests, result.rate, runs + 1
        if runs > 1000:
            raise RuntimeError(f"{running.peer.name}: {count} requests not reached")
    return sent


def memory(bench: Bench, peer: Peer, *, warmup: int, requests: int) -> dict[str, Any]:
    """RSS of a fresh peer idle, after a warm-up, and at each quarter of `requests` more.

    Growth is counted from the warm-up on: the first thousand requests fill caches and the
    allocator's pools once; what keeps growing after that is what a long run accumulates. The
    quarters tell a leak (growth in every quarter) from a last warm-up step (early growth only).
    """
    (running,) = bench.start([peer])
    process = running.process
    assert process is not None
    settle()
    idle = running.rss_bytes()
    started = time.monotonic()
    warmed = send_requests(bench, running, warmup)
    warm = {pid: rss_bytes(pid) for pid in process.tree()}
    sent, checkpoints = 0, []
    for quarter in range(1, 5):
        sent += send_requests(bench, running, requests * quarter // 4 - sent)
        checkpoints.append({"requests": sent, "rss_mib": round(running.rss_bytes() / MIB, 1)})
    after = {pid: rss_bytes(pid) for pid in process.tree()}
    elapsed = time.monotonic() - started
    process.stop()
    growth = (sum(after.values()) - sum(warm.values())) / MIB
    logger.info(
        "memory %-20s idle %.1f MiB, warm %.1f MiB, after %d requests %.1f MiB (%+.2f MiB)",
        peer.name,
        idle / MIB,
        sum(warm.values()) / MIB,
        sent,
        sum(after.values()) / MIB,
        growth,
    )
    return {
        "processes": len(after),
        "rss_idle_mib": round(idle / MIB, 1),
        "rss_warm_mib": round(sum(warm.values()) / MIB, 1),
        "rss_after_mib": round(sum(after.values()) / MIB, 1),
        "growth_mib": round(growth, 2),
        "largest_process_growth_mib": round(
            max(after[pid] - warm.get(pid, 0) for pid in after) / MIB, 2
        ),
        "second_half_growth_mib": round(checkpoints[-1]["rss_mib"] - checkpoints[1]["rss_mib"], 2),
        "checkpoints": checkpoints,
        "warmup_requests": warmed,
        "requests": sent,
        "seconds": round(elapsed, 1),
    }
