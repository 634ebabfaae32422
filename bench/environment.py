"""The test bench: a temporary folder, the nginx upstream, the dispatch config, and the peers.

Used as a context manager: leaving it (normally, on an error or on Ctrl-C) stops every process
it started, then removes the folder.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from sidecar_dispatcher.testing.loopback import free_port, send

from .nginx import (
    LARGE_PATH,
    LARGE_SIZE,
    PAGE_MARKER,
    UpstreamPorts,
    nginx_process,
    upstream_http,
    write_docroot,
)
from .peers import Peer, RunningPeer, bench_config, launch, wait_ready
from .processes import Managed, Pinning

logger = logging.getLogger(__name__)


class Bench(contextlib.AbstractContextManager["Bench"]):
    def __init__(self, pinning: Pinning) -> None:
        self.pinning = pinning
        self._stack = contextlib.ExitStack()
        self.workdir = Path()
        self.ports = UpstreamPorts(0, 0)
        self.config = Path()
        self.upstream: Managed | None = None

    def __enter__(self) -> Bench:
        with self._stack as stack:  # unwound here if the set-up itself fails
            self.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
            self.ports = UpstreamPorts(free_port(), free_port())
            write_docroot(self.workdir / "docroot")
            http = upstream_http(self.ports, self.workdir / "docroot")
            upstream = nginx_process("upstream", self.workdir / "upstream", http, self.pinning.load)
            stack.callback(upstream.stop)
            upstream.start()
            for port in (self.ports.default, self.ports.qa):
                upstream.wait_for_port(port)
            self.upstream = upstream
            self.config = self.workdir / "config.yaml"
            self.config.write_text(bench_config(self.ports))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def upstream_cpu_seconds(self) -> float:
        return self.upstream.cpu_seconds() if self.upstream else 0.0

    def start(self, peers: Sequence[Peer]) -> list[RunningPeer]:
        """Start the peers together, wait until each listens, check that each dispatches."""
        running = []
        for peer in peers:
            started = launch(peer, self.ports, self.workdir, self.pinning, self.config)
            if started.process is not None:
                self._stack.callback(started.process.stop)
            running.append(started)
        for started in running:
            wait_ready(started)
            check_dispatch(started)
        logger.info("started %s", ", ".join(peer.name for peer in peers))
        return running


def check_dispatch(running: RunningPeer) -> None:
    """One request of each kind: the peer must answer as the qa destination, patched."""
    page = send(running.port, "GET", "/", [("environment", "qa")])
    large = send(running.port, "GET", LARGE_PATH, [("environment", "qa")])
    problems = []
    if page.status != 200 or PAGE_MARKER.encode() not in page.body:
        problems.append(f"GET / answered {page.status} {page.body[:200]!r}")
    if page.header("X-Served-By") != "qa" or page.header("Destination_app") != "ok":
        problems.append(f"GET / was not served by the qa destination: {page.headers}")
    if running.peer.dispatches and page.header("Received-Dispatched") != "true":
        problems.append("the qa destination did not receive `dispatched: true`")
    if large.status != 200 or len(large.body) != LARGE_SIZE:
        problems.append(f"GET {LARGE_PATH} answered {large.status} with {len(large.body)} bytes")
    if problems:
        logs = running.process.logs()[-3000:] if running.process else ""
        raise RuntimeError(f"{running.peer.name} does not dispatch: {problems}\n{logs}")


def settle(seconds: float = 1.0) -> None:
    """Let start-up work (CA generation, imports) finish before an idle reading."""
    time.sleep(seconds)
