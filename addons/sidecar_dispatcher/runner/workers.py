"""`--workers N`: N processes sharing the port, kept running by a supervisor without mitmproxy.

    code = WorkerPool(command, count=2, environment=env).run()    # blocks until stopped

A worker that dies is replaced after a back-off (1 s, doubling to 30 s; back to 1 s once a
worker has run for a minute), so one crash does not take the others down and a crash loop does
not spin. A worker that dies within STARTUP_WINDOW of its start failed to start (the port, the
config, mitmproxy's internals): after GIVE_UP_AFTER such failures in a row the supervisor stops
every worker and exits with the last failure's status, so that Kubernetes sees a crash loop.
Workers ask the kernel for SIGTERM when the supervisor dies (`die_with_supervisor`), so that no
orphan keeps sharing the port.

Exit status of `sidecar-dispatcher run --workers N`: 0 after SIGTERM or SIGINT (workers drained),
1 for a bad config, option or admin address found before any worker starts, and the workers'
own status (1 unless a signal killed them) when they keep failing to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from .. import options

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STEADY_AFTER = 60.0  # seconds a worker must run before its back-off starts over
STARTUP_WINDOW = 10.0  # a worker that exits sooner failed to start
GIVE_UP_AFTER = 5  # start failures in a row, all workers together
POLL = 0.2
SUPERVISOR_PID = options.SUPERVISOR_PID_VARIABLE
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class Slot:
    """One worker's place: its current process, and when to start the next one."""

    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    delay: float = FIRST_DELAY


@dataclass
class WorkerPool:
    command: Sequence[str]
    count: int
    environment: Mapping[str, str]
    on_exit: Callable[[int], None] = lambda pid: None  # a worker's pid, once it has exited
    grace: float = 7.0  # seconds workers get to drain after SIGTERM
    slots: list[Slot] = field(default_factory=list)
    stopping: bool = False
    start_failures: int = 0  # in a row

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [slot.process for slot in self.slots if slot.process is not None]

    def all_running(self) -> bool:
        running = [p for p in self.processes() if p.poll() is None]
        return len(running) == self.count

    def run(self) -> int:
        self.slots = [Slot() for _ in range(self.count)]
        for slot in self.slots:
            self._start(slot)
        pids = [p.pid for p in self.processes()]
        print(f"sidecar-dispatcher: {self.count} workers, pids {pids}", flush=True)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, self._forward)
        code = 0
        while not self.stopping:
            failed = self._tend()
            if failed is not None:
                code = failed
                break
            time.sleep(POLL)
        self.stopping = True
        self._stop_all()
        return code

    def _forward(self, number: int, _frame: FrameType | None) -> None:
        self.stopping = self.stopping or number != signal.SIGHUP
        for process in self.processes():
            if process.poll() is None:
                process.send_signal(number)

    def _tend(self) -> int | None:
        """Replace workers that exited; the status to exit with when they keep failing."""
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.poll() is not None:
                self.on_exit(process.pid)
                code = process.returncode
                lived = now - slot.started_at
                if lived < STARTUP_WINDOW:
                    self.start_failures += 1
                else:
                    self.start_failures = 0
                if lived >= STEADY_AFTER:
                    slot.delay = FIRST_DELAY
                if self.start_failures >= GIVE_UP_AFTER:
                    print(
                        f"sidecar-dispatcher: workers failed to start {self.start_failures} "
                        f"times in a row (last status {code}); stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    return code if code and code > 0 else 1
                print(
                    f"sidecar-dispatcher: worker {process.pid} exited with {code} after "
                    f"{lived:.1f} s; starting another in {slot.delay:g} s",
                    file=sys.stderr,
                    flush=True,
                )
                slot.process = None
                slot.restart_at = now + slot.delay
                slot.delay = min(slot.delay * 2, MAX_DELAY)
            if slot.process is None and now >= slot.restart_at and not self.stopping:
                self._start(slot)
        return None

    def _start(self, slot: Slot) -> None:
        environment = {**self.environment, SUPERVISOR_PID: str(os.getpid())}
        slot.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, env=environment)
        slot.started_at = time.monotonic()

    def _stop_all(self) -> None:
        for process in self.processes():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + self.grace
        for process in self.processes():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.on_exit(process.pid)


def die_with_supervisor() -> None:
    """In a worker: SIGTERM when the supervisor dies (Linux); exit now if it is gone already.

    Without it, a supervisor killed with SIGKILL leaves workers sharing the port, and a new
    sidecar would share it with them.
    """
    supervisor = os.environ.get(SUPERVISOR_PID)
    if not supervisor:
        return
    library = ctypes.util.find_library("c")
    if library is not None and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(library, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(supervisor):  # died before prctl took effect
        raise SystemExit(0)
