"""Processes the benchmark starts: pinned to cores, each in its own session, always stopped.

Every process is started with `start_new_session`, so that a Ctrl-C in the terminal reaches only
the benchmark, which then stops each process group it started, by its id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sidecar_dispatcher.testing.loopback import wait_until_accepting

logger = logging.getLogger(__name__)

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL; the runner drains for up to 5 s
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Pinning:
    """Which cores the proxy under test and the load side (generator + upstream) run on."""

    proxy: str | None  # a taskset list such as "0"; None: not pinned
    load: str | None
    both: str | None  # the proxy when it spreads over two cores (`--workers 2`)

    @property
    def pinned(self) -> bool:
        return self.proxy is not None

    @property
    def workers_share_load(self) -> bool:
        """Whether two workers share a core with the load side (always so on 2 cores)."""
        if self.both is None or self.load is None:
            return True
        return bool(set(self.both.split(",")) & set(self.load.split(",")))

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (fewer than 2 usable cores)"
        text = f"proxy on core {self.proxy}, load generator and upstream on core {self.load}"
        if self.workers_share_load:
            return f"{text}; `--workers 2` on cores {self.both}, sharing core {self.load} with them"
        return f"{text}; `--workers 2` on cores {self.both}, apart from them"


def choose_pinning() -> Pinning:
    """Core 0 for the proxy, the rest for the load side; no pinning below two cores.

    With three cores or more, two workers get cores 0 and 1 and the load side the others, so that
    2 workers against 1 is a fair comparison; with two, the second worker shares core 1 with the
    load side (the report says so and accounts for the load side's CPU).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        logger.warning("only %d usable core(s): nothing is pinned, ratios are less meaningful", 1)
        return Pinning(None, None, None)
    if len(cores) == 2:
        proxy, load = cores
        return Pinning(str(proxy), str(load), f"{proxy},{load}")
    load_cores = ",".join(str(c) for c in cores[2:])
    return Pinning(str(cores[0]), load_cores, f"{cores[0]},{cores[1]}")


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


class Managed:
    """A long-running process (a server under test, an upstream) whose output goes to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cpus: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = pinned(argv, cpus)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> Managed:
        logger.debug("starting %s: %s", self.name, " ".join(self.argv))
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.logs().count(text) < count:
            if not self.running():
                raise RuntimeError(f"{self.name} exited before logging {text!r}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not log {text!r} in {timeout}s:\n{self.logs()}"
                )
            time.sleep(0.05)

    def wait_for_port(self, port: int, timeout: float = 120.0) -> None:
        """Until the process accepts connections on `port` (many starting at once are slow)."""
        assert self.process is not None, f"{self.name} was not started"
        try:
            wait_until_accepting(port, self.process, self.name, timeout)
        except RuntimeError as e:
            raise RuntimeError(f"{e}:\n{self.logs()}") from None

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period."""
        if self.process is None or self.process.returncode is not None:
            return
        stop_group(self.process, STOP_GRACE)

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.tree())

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """Stop the process group led by `process` (it was started in its own session)."""
    for number, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, number)
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            logger.warning("pid %d did not stop on %s", process.pid, number.name)
    # Children that outlive their leader (a supervisor's workers) are still in the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_bounded(
    argv: Sequence[str],
    *,
    timeout: float,
    cpus: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a load generator to completion; killed (with its group) past `timeout` or on error."""
    command = pinned(argv, cpus)
    logger.debug("running: %s", " ".join(command))
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


# --- /proc readings


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the command name may hold spaces


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := _ppid(int(entry.name))) is not None:
            parents[int(entry.name)] = parent
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def machine_busy_seconds() -> float:
    """CPU time every core has spent busy since boot (all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
