"""The production runner's own behaviour: workers sharing a port, graceful stop, its options.

Dispatch itself is covered by the other integration tests, which run against the runner too.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from mitmproxy.test import taddons

from sidecar_dispatcher.proxy.live_config import LiveConfig
from sidecar_dispatcher.runner.serve import HangupsWhileStarting
from sidecar_dispatcher.testing.loopback import Response, accepts, send

from .processes import BIN, LoopbackServer, Sidecar, Upstream


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(child) for child in file.read().split()]


def open_sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile
            continue
    return count


def wait_for_workers(parent: int, count: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = children_of(parent)
        if len(children) == count:
            return children
        time.sleep(0.05)
    raise AssertionError(f"{count} workers did not start")


@pytest.fixture
def workers(config_file: Path, default_upstream: Upstream) -> Iterator[Sidecar]:
    sidecar = Sidecar(default_upstream.url, config=config_file, engine="runner")
    sidecar.arguments += ["--workers", "2"]
    with sidecar:
        yield sidecar


def test_two_workers_share_the_port_and_both_take_connections(workers: Sidecar) -> None:
    assert workers.process is not None
    pids = wait_for_workers(workers.process.pid, 2)
    workers.wait_for_log("listening at")
    time.sleep(0.5)  # both workers listening
    before = {pid: open_sockets(pid) for pid in pids}
    clients = [http.client.HTTPConnection("127.0.0.1", workers.port, timeout=10) for _ in range(24)]
    try:
        for client in clients:  # keep-alive: each connection stays with the worker it reached
            client.request("GET", "/", headers={"environment": "dev"})
            response = client.getresponse()
            assert response.status == 200
            response.read()
        gained = {pid: open_sockets(pid) - before[pid] for pid in pids}
    finally:
        for client in clients:
            client.close()
    # 24 connections spread by the kernel: both workers hold some (all on one: p = 2^-23)
    assert all(count > 0 for count in gained.values()), gained
    assert workers.logs().count("listening at") == 2


def test_sigterm_stops_every_worker(workers: Sidecar) -> None:
    assert workers.process is not None
    pids = wait_for_workers(workers.process.pid, 2)
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(15) == 0
    for pid in pids:
        assert (
            not os.path.exists(f"/proc/{pid}/status")
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )


def test_a_worker_that_dies_is_replaced_while_the_other_serves(workers: Sidecar) -> None:
    assert workers.process is not None
    first, second = wait_for_workers(workers.process.pid, 2)
    workers.wait_for_log("listening at", timeout=30, count=2)
    os.kill(first, signal.SIGKILL)  # connections queued at it are reset, as with any proxy
    workers.wait_for_log(f"worker {first} exited with -9")
    for _ in range(10):  # the other worker serves meanwhile (the kernel sends it everything)
        assert workers.request("GET", "/", [("environment", "dev")]).status == 200
    replaced = wait_for_new_worker(workers.process.pid, gone=first)
    assert second in replaced
    assert workers.process.poll() is None
    workers.wait_for_log("listening at", timeout=30, count=3)


def wait_for_new_worker(parent: int, gone: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = children_of(parent)
        if len(children) == 2 and gone not in children:
            return children
        time.sleep(0.1)
    raise AssertionError(f"worker {gone} was not replaced within {timeout}s")


def test_workers_exit_when_the_supervisor_is_killed(workers: Sidecar) -> None:
    assert workers.process is not None
    pids = wait_for_workers(workers.process.pid, 2)
    workers.process.kill()  # SIGKILL: no chance to stop its workers itself
    workers.process.wait(5)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.1)
    with pytest.raises(OSError):  # nothing shares the port any more
        send(workers.port, "GET", "/", timeout=2)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_workers_that_cannot_start_stop_the_supervisor_with_their_status(
    config_file: Path, default_upstream: Upstream
) -> None:
    sidecar = Sidecar(default_upstream.url, config=config_file, engine="runner")
    sidecar.arguments += ["--workers", "2"]
    with socket.create_server(("127.0.0.1", sidecar.port)):  # the port is taken, no reuse
        code = sidecar.run_to_exit(timeout=90)
    assert code == 1
    logs = sidecar.logs()
    assert "failed to start 5 times in a row (last status 1); stopping" in logs
    assert "starting another in 1 s" in logs and "starting another in 2 s" in logs


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(1.5)
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"done")

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class SlowUpstream(LoopbackServer):
    """Answers `done` to every GET, 1.5 s after it arrives."""

    handler_base: ClassVar[type[BaseHTTPRequestHandler]] = _Slow


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    answers: list[Response] = []
    config = tmp_path / "config.yaml"
    with SlowUpstream("slow") as slow:
        config.write_text(f"key: environment\ndestination: {slow.url}\n")
        with Sidecar("unused", config=config, engine="runner") as sidecar:
            in_flight = threading.Thread(
                target=lambda: answers.append(send(sidecar.port, "GET", "/slow", timeout=10))
            )
            in_flight.start()
            time.sleep(0.5)  # the request is at the slow upstream
            assert sidecar.process is not None
            sidecar.process.send_signal(signal.SIGTERM)
            in_flight.join(10)
            assert [(answer.status, answer.body) for answer in answers] == [(200, b"done")]
            assert sidecar.process.wait(10) == 0


def test_options_of_addons_it_does_not_load_are_refused(config_file: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "sidecar-dispatcher"),
            "run",
            "--set",
            f"dispatcher_config={config_file}",
            "--set",
            "map_remote=|x|y",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "unknown option(s) for the lean runner: map_remote" in result.stderr


def test_it_loads_mitmproxy_s_block_addon_as_mitmdump_does(
    config_file: Path, default_upstream: Upstream
) -> None:
    sidecar = Sidecar(
        default_upstream.url, config=config_file, engine="runner", options=["block_global=false"]
    )
    with sidecar:  # refused as an unknown option before the runner loaded the block addon
        assert sidecar.request("GET", "/", [("environment", "dev")]).status == 200


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_bad_sidecar_port_is_refused(config_file: Path, port: str) -> None:
    result = subprocess.run(
        [str(BIN / "sidecar-dispatcher"), "--set", f"dispatcher_config={config_file}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SIDECAR_PORT": port},
    )
    assert result.returncode == 1
    assert f"SIDECAR_PORT='{port}' is not a port number" in result.stderr


def reexecuted(pid: int) -> bool:
    """Has `run` become `python -O -m sidecar_dispatcher` (runner/run_command.py)?"""
    try:
        return b"-O" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False


def test_a_sighup_while_it_starts_does_not_end_it(
    config_file: Path, default_upstream: Upstream
) -> None:
    sidecar = Sidecar(default_upstream.url, config=config_file, engine="runner")
    process = sidecar._spawn()
    sidecar.process = process  # stopped by sidecar.stop() however the test ends
    try:
        # From the moment `run` has re-executed itself with -O, before it imports mitmproxy,
        # builds the master and listens. (Earlier, while the first Python starts, a HUP meets
        # the default action as in any program.)
        deadline = time.monotonic() + 30
        while not reexecuted(process.pid):
            assert process.poll() is None, f"exited with {process.returncode}:\n{sidecar.logs()}"
            assert time.monotonic() < deadline, "it never re-executed itself with -O"
            time.sleep(0.001)
        hangups, accepted_at = 0, None
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            os.kill(process.pid, signal.SIGHUP)
            hangups += 1
            time.sleep(0.005)
            if accepted_at is None and accepts(sidecar.port):
                accepted_at = time.monotonic()
            if accepted_at is not None and time.monotonic() - accepted_at > 0.5:
                break
        assert process.poll() is None, (
            f"exited with {process.returncode} after {hangups} SIGHUPs:\n{sidecar.logs()}"
        )
        assert accepted_at is not None, f"not listening after 30 s:\n{sidecar.logs()}"
        assert sidecar.request("GET", "/", [("environment", "dev")]).status == 200
        sidecar.wait_for_log("reloaded (SIGHUP)")  # the HUPs were reloads of the config
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        sidecar.stop()


def test_sighups_before_the_config_keeper_runs_are_one_reload_once_it_does(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = LiveConfig()
    loop = asyncio.new_event_loop()  # the runner's, not running yet: the master is being built
    try:
        hangups = HangupsWhileStarting(loop)
        with taddons.context(keeper) as tctx:
            tctx.configure(keeper, dispatcher_config=str(config_file), dispatcher_watch=False)
            hangups.config = keeper
            # Or the HUPs below would end this test run, as they ended the runner.
            assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)
            for _ in range(3):
                os.kill(os.getpid(), signal.SIGHUP)
            loop.run_until_complete(asyncio.sleep(0.05))  # the loop hands them to the handler
            assert hangups.received == 3
            with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
                hangups.running()  # mitmproxy's `running`, after the keeper's own
    finally:
        loop.close()  # and with it the handler: SIGHUP's default action again
    reloads = [r for r in caplog.records if "reloaded (SIGHUP while starting)" in r.getMessage()]
    assert len(reloads) == 1
