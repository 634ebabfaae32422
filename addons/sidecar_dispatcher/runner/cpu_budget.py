"""How many workers `--workers auto` starts: one per CPU this process may use.

    budget = cpu_budget()     # reads /proc/self/cgroup, the cgroup CPU limits and the affinity
    budget.workers            # 2
    budget.describe()         # "2 workers: affinity 8 CPUs, cgroup CPU quota 2.5 (...), ..."

CPUs usable = min(CPUs in the affinity mask, floor(the tightest cgroup CPU quota)), at least 1.
The affinity mask already reflects a cpuset (`docker run --cpuset-cpus`, Kubernetes' static CPU
manager); the quota is the CFS bandwidth limit (`docker run --cpus`, a Kubernetes CPU limit):
cgroup v2 `cpu.max`, else cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`. Every cgroup from
the process's own up to the top of the mount is read, because the kernel enforces the tightest
of them (a limit on a pod's cgroup binds its containers). A file that is absent, unreadable or
malformed counts as no limit: `auto` must never stop the sidecar from starting.

No mitmproxy here: the supervisor imports it. `root` stands for `/`, so that tests can point it
at a folder holding fake `proc/self/cgroup` and `sys/fs/cgroup/...` files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

AUTO = "auto"
CGROUP_MOUNT = PurePosixPath("sys/fs/cgroup")  # where cgroup v2 (or v1's controllers) is mounted
OWN_CGROUPS = PurePosixPath("proc/self/cgroup")


@dataclass(frozen=True, slots=True)
class CpuLimit:
    """A cgroup CPU bandwidth limit: `cpus` CPUs' worth of time per period, read from `source`."""

    cpus: Fraction
    source: str  # the file, as an absolute path on the real system


@dataclass(frozen=True, slots=True)
class CpuBudget:
    """What `auto` found and the worker count it makes of it."""

    affinity: int  # CPUs the process may be scheduled on
    limit: CpuLimit | None  # the tightest cgroup limit; None: no limit

    @property
    def workers(self) -> int:
        # Rounded down, like Uber's automaxprocs (and unlike nginx's `worker_processes auto`,
        # which ignores quotas, or Go 1.25's GOMAXPROCS, which rounds up): each worker is one
        # single-threaded event loop, able to burn at most one CPU, so floor(quota) busy workers
        # never exceed the quota and CFS never throttles them. Throttling freezes every
        # connection of the cgroup for the rest of the period (up to 100 ms by default) - latency
        # added to every request, which a proxy must not have - whereas rounding down leaves at
        # most a fraction of a CPU unused (the supervisor and mitmproxy's threads use some).
        if self.limit is None:
            return max(1, self.affinity)
        return max(1, min(self.affinity, math.floor(self.limit.cpus)))

    def describe(self) -> str:
        """One line for the start-up log: how many workers, and why."""
        noun = "worker" if self.workers == 1 else "workers"
        unit = "CPU" if self.affinity == 1 else "CPUs"
        text = f"--workers auto: {self.workers} {noun}: affinity {self.affinity} {unit}"
        if self.limit is None:
            return f"{text}, no cgroup CPU quota"
        quota = self.limit.cpus
        text += f", cgroup CPU quota {float(quota):g} ({self.limit.source})"
        if quota < 1:
            return f"{text}, at least 1"
        return f"{text}, rounded down" if quota.denominator != 1 else text


def parse_workers(text: str) -> int | None:
    """`--workers` as given: a count of 1 or more, or None for `auto`; ValueError otherwise."""
    value = text.strip()
    if value.lower() == AUTO:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise ValueError(f"expected a number of workers of 1 or more, or 'auto'; got {text!r}")
    return int(value)


def cpu_budget(root: Path = Path("/"), affinity: int | None = None) -> CpuBudget:
    """The CPUs this process may use; `affinity` overrides the mask's size (for tests)."""
    return CpuBudget(
        affinity=affinity_cpus() if affinity is None else affinity,
        limit=cgroup_cpu_limit(root),
    )


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (taskset, cpusets); all CPUs where there is none."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cgroup_cpu_limit(root: Path) -> CpuLimit | None:
    """The tightest CPU limit of the process's cgroups, v2 and v1 alike; None when none is set.

    Both are read because a hybrid host mounts v2 (for systemd) beside the v1 controllers: the
    `0::` line alone does not say where the cpu controller lives. A file that does not exist
    at a level simply adds nothing.
    """
    limits: list[CpuLimit] = []
    mount = root / CGROUP_MOUNT
    for controllers, path in own_cgroups(root):
        if controllers == "":  # cgroup v2: one hierarchy, every controller
            for folder in ancestors(mount, path):
                limits += optional(read_cpu_max(root, folder / "cpu.max"))
        elif "cpu" in controllers.split(","):  # cgroup v1: the hierarchy holding `cpu`
            for hierarchy in v1_cpu_mounts(mount):
                for folder in ancestors(hierarchy, path):
                    limits += optional(read_cfs_quota(root, folder))
    return min(limits, key=lambda limit: limit.cpus, default=None)


def own_cgroups(root: Path) -> list[tuple[str, str]]:
    """(controllers, path) per line of /proc/self/cgroup: ("", "/x") for v2's `0::/x`."""
    text = read_text(root / OWN_CGROUPS)
    found = []
    for line in (text or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            found.append((fields[1], fields[2]))
    return found


def v1_cpu_mounts(mount: Path) -> list[Path]:
    """The v1 hierarchies holding the cpu controller: `cpu`, `cpu,cpuacct` (often both, one a
    symbolic link to the other: reading it twice changes nothing)."""
    try:
        return sorted(p for p in mount.iterdir() if "cpu" in p.name.split(",") and p.is_dir())
    except OSError:
        return []


def ancestors(hierarchy: Path, cgroup: str) -> list[Path]:
    """The process's cgroup folder and every parent up to the hierarchy's top, leaf first.

    In a container the mount's top is the container's own cgroup, and /proc/self/cgroup may
    still name the host's path (`/kubepods/.../<id>`), which does not exist below the mount:
    walking up reaches the top, whose limit is the container's. A path with `..` lies outside
    what the mount shows (another cgroup namespace): only the top is read.
    """
    parts = PurePosixPath(cgroup).parts[1:]  # without the leading "/"
    if ".." in parts:
        parts = ()
    return [hierarchy.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def read_cpu_max(root: Path, path: Path) -> CpuLimit | None:
    """cgroup v2 `cpu.max`: "150000 100000" is 1.5 CPUs; "max 100000" is no limit."""
    fields = (read_text(path) or "").split()
    if not fields or fields[0] == "max":
        return None
    period = fields[1] if len(fields) > 1 else "100000"  # the kernel's default period
    return limit(fields[0], period, shown(root, path))


def read_cfs_quota(root: Path, folder: Path) -> CpuLimit | None:
    """cgroup v1 `cpu.cfs_quota_us` (-1: no limit) over `cpu.cfs_period_us`."""
    quota = read_text(folder / "cpu.cfs_quota_us")
    period = read_text(folder / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return limit(quota.strip(), period.strip(), shown(root, folder / "cpu.cfs_quota_us"))


def limit(quota: str, period: str, source: str) -> CpuLimit | None:
    """quota/period in CPUs; None for -1 (v1's "no limit") and for anything malformed."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return CpuLimit(Fraction(quota_us, period_us), source)


def read_text(path: Path) -> str | None:
    """The file's text; None when it is absent or unreadable (both mean: no limit here)."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def shown(root: Path, path: Path) -> str:
    """The path as it is on the real system (`/sys/fs/cgroup/cpu.max`), also under a test root."""
    return "/" + path.relative_to(root).as_posix()


def optional(value: CpuLimit | None) -> list[CpuLimit]:
    return [] if value is None else [value]
