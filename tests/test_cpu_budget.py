"""`--workers auto`: the CPUs the process may use, read from fake cgroup v1 and v2 trees."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from sidecar_dispatcher.runner.cpu_budget import (
    CpuBudget,
    CpuLimit,
    cpu_budget,
    parse_workers,
)
from sidecar_dispatcher.runner.run_command import worker_count
from sidecar_dispatcher.tools.cli import make_parser


def write(root: Path, path: str, text: str) -> Path:
    """A file of the fake system under `root`, e.g. "sys/fs/cgroup/cpu.max"."""
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


def v2(root: Path, cgroup: str = "/", **cpu_max: str) -> Path:
    """A cgroup v2 system: the process in `cgroup`; cpu.max per folder below the mount."""
    write(root, "proc/self/cgroup", f"0::{cgroup}\n")
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    for folder, text in cpu_max.items():
        write(root, f"sys/fs/cgroup/{folder}/cpu.max".replace("//", "/"), text)
    return root


def v1(root: Path, quota: str, period: str = "100000", cgroup: str = "/") -> Path:
    """A cgroup v1 system (Docker on an older host): cpu and cpuacct mounted together."""
    write(
        root,
        "proc/self/cgroup",
        f"12:memory:{cgroup}\n4:cpu,cpuacct:{cgroup}\n1:name=systemd:{cgroup}\n0::/\n",
    )
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", f"{quota}\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", f"{period}\n")
    write(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n")
    return root


# --- cgroup v2


def test_v2_quota_of_four_cpus_gives_four_workers(tmp_path: Path) -> None:
    budget = cpu_budget(v2(tmp_path, **{"/": "400000 100000\n"}), affinity=8)
    assert budget.limit == CpuLimit(Fraction(4), "/sys/fs/cgroup/cpu.max")
    assert budget.workers == 4
    assert budget.describe() == (
        "--workers auto: 4 workers: affinity 8 CPUs, cgroup CPU quota 4 (/sys/fs/cgroup/cpu.max)"
    )


def test_v2_max_is_no_limit_so_every_cpu_of_the_affinity_counts(tmp_path: Path) -> None:
    budget = cpu_budget(v2(tmp_path, **{"/": "max 100000\n"}), affinity=8)
    assert budget.limit is None
    assert budget.workers == 8
    assert budget.describe() == "--workers auto: 8 workers: affinity 8 CPUs, no cgroup CPU quota"


def test_a_fractional_quota_is_rounded_down(tmp_path: Path) -> None:
    # 1.5 CPUs: two busy single-threaded workers would exceed it and be throttled.
    budget = cpu_budget(v2(tmp_path, **{"/": "150000 100000\n"}), affinity=8)
    assert budget.limit is not None and budget.limit.cpus == Fraction(3, 2)
    assert budget.workers == 1
    assert budget.describe().endswith("cgroup CPU quota 1.5 (/sys/fs/cgroup/cpu.max), rounded down")


def test_a_quota_of_less_than_one_cpu_still_gives_one_worker(tmp_path: Path) -> None:
    budget = cpu_budget(v2(tmp_path, **{"/": "25000 100000\n"}), affinity=4)  # 250m
    assert budget.workers == 1
    assert budget.describe() == (
        "--workers auto: 1 worker: affinity 4 CPUs, cgroup CPU quota 0.25 "
        "(/sys/fs/cgroup/cpu.max), at least 1"
    )


def test_a_period_other_than_the_default_is_honoured(tmp_path: Path) -> None:
    budget = cpu_budget(v2(tmp_path, **{"/": "150000 50000\n"}), affinity=8)
    assert budget.workers == 3


def test_an_affinity_smaller_than_the_quota_wins(tmp_path: Path) -> None:
    # taskset -c 0 (or a cpuset) inside a container allowed 4 CPUs' worth of time
    budget = cpu_budget(v2(tmp_path, **{"/": "400000 100000\n"}), affinity=1)
    assert budget.workers == 1
    assert budget.describe().startswith("--workers auto: 1 worker: affinity 1 CPU, ")


def test_a_parent_cgroup_with_a_smaller_limit_binds_the_process(tmp_path: Path) -> None:
    root = v2(
        tmp_path,
        "/kubepods/pod1/container",
        **{
            "/": "max 100000\n",
            "kubepods": "max 100000\n",
            "kubepods/pod1": "200000 100000\n",  # the pod's limit
            "kubepods/pod1/container": "max 100000\n",  # the container's own: none
        },
    )
    budget = cpu_budget(root, affinity=16)
    assert budget.limit == CpuLimit(Fraction(2), "/sys/fs/cgroup/kubepods/pod1/cpu.max")
    assert budget.workers == 2


def test_the_process_own_cgroup_with_the_smallest_limit_binds_it(tmp_path: Path) -> None:
    root = v2(
        tmp_path,
        "/app/worker",
        **{"app": "800000 100000\n", "app/worker": "300000 100000\n"},
    )
    assert cpu_budget(root, affinity=16).workers == 3


def test_a_container_sees_its_own_limit_at_the_top_of_the_mount(tmp_path: Path) -> None:
    # Without a cgroup namespace /proc/self/cgroup names the host's path, which the
    # container's mount does not show: the top of the mount is the container's cgroup.
    root = v2(tmp_path, "/kubepods.slice/pod2.slice/cri-abc.scope", **{"/": "300000 100000\n"})
    assert cpu_budget(root, affinity=16).workers == 3


def test_a_path_outside_the_cgroup_namespace_reads_only_the_top(tmp_path: Path) -> None:
    root = v2(tmp_path, "/../other", **{"/": "200000 100000\n"})
    write(tmp_path, "sys/other/cpu.max", "100000 100000\n")  # never read: above the mount
    assert cpu_budget(root, affinity=8).workers == 2


# --- cgroup v1


def test_v1_quota_over_period_gives_the_cpus(tmp_path: Path) -> None:
    budget = cpu_budget(v1(tmp_path, "250000"), affinity=8)
    assert budget.limit == CpuLimit(Fraction(5, 2), "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us")
    assert budget.workers == 2


def test_v1_quota_of_minus_one_is_no_limit(tmp_path: Path) -> None:
    budget = cpu_budget(v1(tmp_path, "-1"), affinity=6)
    assert budget.limit is None
    assert budget.workers == 6


def test_v1_nested_cgroup_with_a_smaller_limit_binds_it(tmp_path: Path) -> None:
    root = v1(tmp_path, "-1", cgroup="/docker/abc")
    write(root, "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us", "600000\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "200000\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    budget = cpu_budget(root, affinity=8)
    assert budget.limit is not None
    assert budget.limit.source == "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us"
    assert budget.workers == 2


def test_v1_cpu_controller_mounted_alone_is_found(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "2:cpuacct:/\n1:cpu:/\n0::/\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "300000\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    write(tmp_path, "sys/fs/cgroup/cpuacct/cpu.cfs_quota_us", "100000\n")  # not the cpu mount
    write(tmp_path, "sys/fs/cgroup/cpuacct/cpu.cfs_period_us", "100000\n")
    assert cpu_budget(tmp_path, affinity=8).workers == 3


def test_a_hybrid_host_reads_the_v1_cpu_controller_beside_the_v2_mount(tmp_path: Path) -> None:
    # systemd's hybrid layout: a `0::/` line, v2 at /sys/fs/cgroup/unified, cpu in v1
    root = v1(tmp_path, "200000")
    write(root, "sys/fs/cgroup/unified/cgroup.controllers", "\n")
    assert cpu_budget(root, affinity=8).workers == 2


# --- what cannot be read is no limit


def test_no_cgroup_information_at_all_is_no_limit(tmp_path: Path) -> None:
    budget = cpu_budget(tmp_path, affinity=3)
    assert budget.limit is None
    assert budget.workers == 3


def test_an_unreadable_quota_file_is_no_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreadable = v2(tmp_path, **{"/": "100000 100000\n"}) / "sys/fs/cgroup/cpu.max"
    read_text = Path.read_text

    def refuse(path: Path, *args: object, **kwargs: object) -> str:
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)

    monkeypatch.setattr(Path, "read_text", refuse)
    assert cpu_budget(tmp_path, affinity=4).workers == 4


def test_a_quota_path_that_is_a_folder_is_no_limit(tmp_path: Path) -> None:
    v2(tmp_path)
    (tmp_path / "sys/fs/cgroup/cpu.max").mkdir()
    assert cpu_budget(tmp_path, affinity=4).limit is None


@pytest.mark.parametrize(
    "text", ["", "garbage\n", "150000 zero\n", "0 100000\n", "100000 0\n", "\xff\n"]
)
def test_a_malformed_cpu_max_is_no_limit(tmp_path: Path, text: str) -> None:
    v2(tmp_path)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_bytes(text.encode("latin-1"))
    assert cpu_budget(tmp_path, affinity=2).limit is None


def test_v1_quota_without_its_period_is_no_limit(tmp_path: Path) -> None:
    root = v1(tmp_path, "200000")
    (root / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us").unlink()
    assert cpu_budget(root, affinity=8).limit is None


def test_a_malformed_proc_self_cgroup_is_no_limit(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "nonsense\n\n")
    write(tmp_path, "sys/fs/cgroup/cpu.max", "100000 100000\n")
    assert cpu_budget(tmp_path, affinity=2).workers == 2


def test_always_at_least_one_worker() -> None:
    assert CpuBudget(affinity=0, limit=None).workers == 1
    assert CpuBudget(affinity=0, limit=CpuLimit(Fraction(0, 1), "/x")).workers == 1


# --- this machine


def test_the_real_system_gives_between_one_and_the_affinity() -> None:
    budget = cpu_budget()
    assert budget.affinity == len(os.sched_getaffinity(0))
    assert 1 <= budget.workers <= budget.affinity


def test_auto_resolves_to_the_budget_and_a_count_stays_as_given() -> None:
    assert worker_count(3) == (3, None)
    count, budget = worker_count(None)
    assert budget is not None and count == budget.workers >= 1


ANNOUNCE = (
    "from fractions import Fraction; "
    "from sidecar_dispatcher.runner.cpu_budget import CpuBudget, CpuLimit; "
    "from sidecar_dispatcher.runner.run_command import announce; "
    "announce(None); "  # a count given: nothing to say
    "announce(CpuBudget(8, CpuLimit(Fraction(5, 2), '/sys/fs/cgroup/cpu.max')))"
)


@pytest.mark.spawns
@pytest.mark.parametrize(("level", "shown"), [("", True), ("info", True), ("WARNING", False)])
def test_auto_says_once_at_info_how_it_counted(level: str, shown: bool) -> None:
    # In a fresh interpreter: the line is logged before any other handler exists.
    result = subprocess.run(
        [sys.executable, "-c", ANNOUNCE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "SIDECAR_LOGGING_LEVEL": level},
    )
    expected = (
        "sidecar-dispatcher: --workers auto: 2 workers: affinity 8 CPUs, "
        "cgroup CPU quota 2.5 (/sys/fs/cgroup/cpu.max), rounded down\n"
    )
    assert result.stdout == (expected if shown else "")
    assert result.stderr == ""


# --- the --workers argument


@pytest.mark.parametrize(
    ("text", "expected"), [("auto", None), ("AUTO", None), ("1", 1), ("12", 12)]
)
def test_workers_takes_a_positive_count_or_auto(text: str, expected: int | None) -> None:
    assert parse_workers(text) == expected
    assert make_parser().parse_args(["run", "--workers", text]).workers == expected


def test_workers_defaults_to_one() -> None:
    assert make_parser().parse_args(["run"]).workers == 1


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", "", "2 workers", "٣"])
def test_workers_refuses_anything_else_with_a_clear_message(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        make_parser().parse_args(["run", "--workers", text])
    assert exited.value.code == 2
    assert (
        f"argument --workers: expected a number of workers of 1 or more, or 'auto'; got {text!r}"
        in capsys.readouterr().err
    )
