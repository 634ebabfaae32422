"""The suite: every peer under every workload, then k6, then memory, as one JSON document."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any

from .environment import Bench, settle
from .load import K6Form
from .machine import describe
from .measure import WORKLOADS, Workload, k6_rounds, memory, throughput_rounds
from .peers import SUITE_PEERS, Peer, missing_program
from .processes import Pinning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    mode: str
    rounds: int  # alternating wrk rounds per workload
    seconds: float  # one wrk run
    k6_rounds: int  # alternating rounds of each form of the k6 profile
    k6_vus: int
    k6_ramp: float  # seconds over which the users start
    k6_hold: float  # seconds at full load, whose latencies are reported
    k6_spike_vus: int  # the spike: every user starts at once
    k6_spike_seconds: float  # its whole length, whose latencies are reported
    memory_peers: tuple[str, ...]
    memory_warmup: int
    memory_requests: int
    patient: bool  # wait for a quiet machine before each run, measure a disturbed run again
    peers: tuple[Peer, ...] = SUITE_PEERS
    workloads: tuple[Workload, ...] = WORKLOADS


FULL = Plan(
    mode="full",
    rounds=3,
    seconds=10,
    k6_rounds=2,
    k6_vus=200,
    k6_ramp=5,
    k6_hold=20,
    k6_spike_vus=200,
    k6_spike_seconds=20,
    memory_peers=("nginx-map", "haproxy", "mitmdump-addon", "runner-1", "runner-2"),
    memory_warmup=2000,
    memory_requests=100_000,
    patient=True,
)
# A smoke of every peer and workload, for CI: numbers too short to compare, but real.
QUICK = Plan(
    mode="quick",
    rounds=1,
    seconds=1,
    k6_rounds=1,
    k6_vus=200,
    k6_ramp=0.2,
    k6_hold=1.3,
    k6_spike_vus=200,
    k6_spike_seconds=1,  # one request per user: the burst itself
    memory_peers=("runner-1",),
    memory_warmup=200,
    memory_requests=1000,
    patient=False,
)


def k6_forms(plan: Plan) -> tuple[K6Form, K6Form]:
    return (
        K6Form("ramped", plan.k6_vus, plan.k6_ramp, plan.k6_hold),
        K6Form("spike", plan.k6_spike_vus, 0, plan.k6_spike_seconds),
    )


def runnable(plan: Plan) -> tuple[Plan, dict[str, str]]:
    """The plan without the peers this machine cannot run (HAProxy not installed), and why."""
    skipped = {peer.name: why for peer in plan.peers if (why := missing_program(peer))}
    for name, why in skipped.items():
        logger.warning("%s left out: %s", name, why)
    peers = tuple(peer for peer in plan.peers if peer.name not in skipped)
    memory_peers = tuple(name for name in plan.memory_peers if name not in skipped)
    return dataclasses.replace(plan, peers=peers, memory_peers=memory_peers), skipped


def run_suite(plan: Plan, pinning: Pinning) -> dict[str, Any]:
    started = time.monotonic()
    plan, skipped = runnable(plan)
    ramped, spike = k6_forms(plan)
    document: dict[str, Any] = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": plan.mode,
        "machine": describe(),
        "method": {
            **{
                k: v for k, v in dataclasses.asdict(plan).items() if k not in ("peers", "workloads")
            },
            "pinning": pinning.describe(),
            "workers_share_load": pinning.workers_share_load,
            "workloads": {w.name: w.label for w in plan.workloads},
        },
        "skipped": skipped,
        "peers": {
            peer.name: {
                "label": peer.label,
                "kind": peer.kind,
                "dispatches": peer.dispatches,
                "cores": proxy_cores(peer, pinning),
                "note": peer.note,
            }
            for peer in plan.peers
        },
    }
    with Bench(pinning) as bench:
        running = bench.start(plan.peers)
        settle()
        idle = {r.peer.name: round(r.rss_bytes() / 2**20, 1) for r in running if r.process}
        throughput = throughput_rounds(
            bench,
            running,
            plan.workloads,
            rounds=plan.rounds,
            seconds=plan.seconds,
            patient=plan.patient,
        )
        k6_ramped = k6_rounds(bench, running, ramped, rounds=plan.k6_rounds, patient=plan.patient)
        k6_spike = k6_rounds(bench, running, spike, rounds=plan.k6_rounds, patient=plan.patient)
        for started_peer in running:
            if started_peer.process:
                started_peer.process.stop()
        by_name = {peer.name: peer for peer in plan.peers}
        memory_results = {
            name: memory(
                bench,
                by_name[name],
                warmup=plan.memory_warmup,
                requests=plan.memory_requests,
            )
            for name in plan.memory_peers
        }
    document["results"] = {
        peer.name: {
            **throughput.get(peer.name, {}),
            "k6": k6_ramped.get(peer.name),
            "k6_spike": k6_spike.get(peer.name),
            "rss_idle_mib": idle.get(peer.name),
            "memory": memory_results.get(peer.name),
        }
        for peer in plan.peers
    }
    document["seconds"] = round(time.monotonic() - started, 1)
    return document


def proxy_cores(peer: Peer, pinning: Pinning) -> str:
    if peer.kind == "direct":
        return "-"
    if not pinning.pinned:
        return "any"
    cores = pinning.both if peer.spreads else pinning.proxy
    return cores or "any"
