"""`sidecar-dispatcher run --workers auto` as a real process, its CPUs chosen with taskset.

One CPU in the affinity mask: it serves in-process, as `--workers 1` does. Two: two workers
share the port (skipped where the cgroup quota allows less than two CPUs). Either way requests
are dispatched, and /metrics says how many workers run.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar_dispatcher.runner.cpu_budget import cpu_budget

from .processes import Sidecar, Upstream, require_program

READY_TIMEOUT = 30.0


def pinned_sidecar(config_file: Path, default_upstream: Upstream, cpus: list[int]) -> Sidecar:
    """The runner with `--workers auto` under `taskset -c CPUS`, its admin listener on."""
    taskset = require_program(Path(shutil.which("taskset") or "/nonexistent"), "taskset")
    sidecar = Sidecar(default_upstream.url, config=config_file, engine="runner", admin=True)
    listed = ",".join(str(cpu) for cpu in cpus)
    sidecar.arguments = [str(taskset), "-c", listed, *sidecar.arguments, "--workers", "auto"]
    return sidecar


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(child) for child in file.read().split()]


def wait_until_ready(sidecar: Sidecar) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while sidecar.admin("/readyz").status != 200:  # a second worker may still be starting
        assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT}s:\n{sidecar.logs()}"
        time.sleep(0.1)


def gauge(sidecar: Sidecar, name: str) -> float:
    response = sidecar.admin("/metrics")
    assert response.status == 200, response.body
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def assert_dispatches(sidecar: Sidecar, connections: int) -> None:
    """Each request on a connection of its own, so that every worker takes some."""
    for _ in range(connections):
        assert sidecar.request("GET", "/x", [("environment", "dev")]).json()["upstream"] == "dev"
        assert sidecar.request("GET", "/x").json()["upstream"] == "default"


def test_auto_with_one_cpu_serves_in_process(config_file: Path, default_upstream: Upstream) -> None:
    first = min(os.sched_getaffinity(0))
    with pinned_sidecar(config_file, default_upstream, [first]) as sidecar:
        assert sidecar.process is not None
        sidecar.wait_for_log("--workers auto: 1 worker: affinity 1 CPU")
        wait_until_ready(sidecar)
        assert sidecar.logs().count("--workers auto:") == 1  # though the runner re-executes
        assert children_of(sidecar.process.pid) == []  # no supervisor: the process serves
        assert_dispatches(sidecar, connections=3)
        assert gauge(sidecar, "sidecar_dispatcher_workers") == 1.0
        assert "workers, pids" not in sidecar.logs()


def test_auto_with_two_cpus_starts_two_workers_on_one_port(
    config_file: Path, default_upstream: Upstream
) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.skip("this machine lets the tests use one CPU")
    if cpu_budget(affinity=2).workers < 2:
        pytest.skip("the cgroup CPU quota here is below two CPUs")
    with pinned_sidecar(config_file, default_upstream, cpus) as sidecar:
        assert sidecar.process is not None
        sidecar.wait_for_log("--workers auto: 2 workers: affinity 2 CPUs")
        wait_until_ready(sidecar)
        assert len(children_of(sidecar.process.pid)) == 2
        assert gauge(sidecar, "sidecar_dispatcher_workers") == 2.0
        assert gauge(sidecar, "sidecar_dispatcher_ready") == 2.0
        assert_dispatches(sidecar, connections=12)
        sidecar.wait_for_log("listening at", count=2)  # both took the shared port
