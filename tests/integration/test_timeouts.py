"""End to end: destinations that accept and never answer get the client a 504 in time.

Against `mitmdump -s addons/dispatcher.py` and the runner, with `dispatcher_upstream_timeout=2`
and a route `hang` with `timeout: 1`, in front of `Silent`: a destination that reads requests
and answers only `/after/<seconds>` (after that long), never anything else. HTTP/1 and HTTP/2
clients, buffered and streamed request bodies, a TLS handshake and a TCP connect that never
finish; the metrics and the access log; and, in this process, that no timer or task outlives its
request.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import pytest
from mitmproxy import master

from sidecar_dispatcher.proxy.addon import Dispatcher
from sidecar_dispatcher.proxy.timeouts import UpstreamTimeouts
from sidecar_dispatcher.runner.serve import build_master
from sidecar_dispatcher.testing.loopback import accepts, free_port, send

from .conftest import SaveConfig
from .processes import Sidecar, Started, Upstream, binary_payload
from .test_http2_client import sidecar_ca, verifying
from .test_observability import scrape

ROUTE_TIMEOUT = 1.0
OPTION_TIMEOUT = 2.0
LEEWAY = 0.5  # the bound: the 504 within the timeout and half a second


@dataclass
class Accepted:
    """One connection to `Silent`: what it received, and when the sidecar closed it."""

    received: bytearray = field(default_factory=bytearray)
    closed_at: float | None = None


class Silent(Started):
    """A destination that reads everything and answers only `/after/<s>`, after s seconds."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted: list[Accepted] = []

    def start(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            accepted = Accepted()
            self.accepted.append(accepted)
            threading.Thread(target=self._serve, args=(conn, accepted), daemon=True).start()

    def _serve(self, conn: socket.socket, accepted: Accepted) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    accepted.closed_at = time.monotonic()
                    return
                accepted.received += data
                if match := re.match(rb"[A-Z]+ /[^ ]*/after/([0-9.]+) ", accepted.received):
                    time.sleep(float(match.group(1)))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")

    def wait_until_closed(self, accepted: Accepted, timeout: float = 2.0) -> float:
        deadline = time.monotonic() + timeout
        while accepted.closed_at is None:
            assert time.monotonic() < deadline, "the sidecar kept the connection open"
            time.sleep(0.01)
        return accepted.closed_at

    def last_accepted(self, after: int) -> Accepted:
        deadline = time.monotonic() + 2.0
        while len(self.accepted) <= after:
            assert time.monotonic() < deadline, "the sidecar never connected"
            time.sleep(0.01)
        return self.accepted[-1]


def timeout_config(default: str, silent: int) -> str:
    return f"""\
key: environment
destination: {default}
rewrites:
  slow:
    destination: http://127.0.0.1:{silent}
routes:
  - name: hang
    match:
      path: {{prefix: /hang/}}
    destination: http://127.0.0.1:{silent}
    timeout: {ROUTE_TIMEOUT:g}
  - name: tls-hang
    match:
      path: {{prefix: /tls/}}
    destination: https://127.0.0.1:{silent}
    timeout: {ROUTE_TIMEOUT:g}
"""


@pytest.fixture(scope="module")
def silent() -> Iterator[Silent]:
    with Silent() as server:
        yield server


@pytest.fixture(scope="module")
def timeout_sidecar(
    save_config: SaveConfig, default_upstream: Upstream, silent: Silent, engine: str
) -> Iterator[Sidecar]:
    config = save_config(timeout_config(default_upstream.url, silent.port))
    with Sidecar(
        default_upstream.url,
        config=config,
        options=[f"dispatcher_upstream_timeout={OPTION_TIMEOUT:g}", "stream_large_bodies=1k"],
        engine=engine,
        admin=True,
    ) as sidecar:
        yield sidecar


def test_a_route_timeout_answers_504_naming_the_route_and_closes_the_upstream_connection(
    timeout_sidecar: Sidecar, silent: Silent
) -> None:
    before = len(silent.accepted)
    started = time.monotonic()
    response = timeout_sidecar.request("GET", "/hang/never")
    answered = time.monotonic()
    assert ROUTE_TIMEOUT <= answered - started < ROUTE_TIMEOUT + LEEWAY
    assert response.status == 504
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert response.body == (
        b"sidecar dispatcher: route hang: no response headers from its destination within 1 s\n"
    )
    accepted = silent.last_accepted(before)
    assert accepted.received.startswith(b"GET /hang/never HTTP/1.1\r\n")
    assert silent.wait_until_closed(accepted) - answered < LEEWAY


def test_an_answer_within_the_routes_timeout_passes(timeout_sidecar: Sidecar) -> None:
    response = timeout_sidecar.request("GET", "/hang/after/0.3")
    assert (response.status, response.body) == (200, b"late")


def test_a_fast_destination_is_not_affected(
    timeout_sidecar: Sidecar, default_upstream: Upstream
) -> None:
    response = timeout_sidecar.request("GET", "/fast")
    assert response.status == 200
    assert response.json()["upstream"] == "default"


def test_the_option_applies_to_a_rule_without_a_route_timeout(timeout_sidecar: Sidecar) -> None:
    started = time.monotonic()
    response = timeout_sidecar.request("GET", "/never", [("environment", "slow")])
    elapsed = time.monotonic() - started
    assert OPTION_TIMEOUT <= elapsed < OPTION_TIMEOUT + LEEWAY
    assert response.status == 504
    assert response.body == (
        b"sidecar dispatcher: rule slow: no response headers from its destination within 2 s\n"
    )


def test_the_client_connection_serves_its_next_request_after_a_504(
    timeout_sidecar: Sidecar,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", timeout_sidecar.port, timeout=10)
    try:
        statuses = []
        for method, path in (
            ("GET", "/hang/never"),
            ("GET", "/fast"),
            ("HEAD", "/hang/never"),  # a body here would be read as the next response
            ("GET", "/hang/after/0.1"),
        ):
            connection.request(method, path)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        assert statuses == [504, 200, 504, 200]
        assert connection.sock is not None  # one connection all along
    finally:
        connection.close()


@pytest.mark.parametrize("size", [512, 64 * 1024], ids=["buffered", "streamed"])
def test_a_request_body_is_sent_then_the_clock_runs(
    timeout_sidecar: Sidecar, silent: Silent, size: int
) -> None:
    body = binary_payload(size)
    before = len(silent.accepted)
    started = time.monotonic()
    response = timeout_sidecar.request("POST", "/hang/upload", body=body)
    assert time.monotonic() - started < ROUTE_TIMEOUT + LEEWAY
    assert response.status == 504
    accepted = silent.last_accepted(before)
    silent.wait_until_closed(accepted)
    assert bytes(accepted.received).endswith(body)


def test_an_http2_client_gets_the_504_on_its_stream_and_its_other_streams_pass(
    timeout_sidecar: Sidecar,
) -> None:
    async def exchange() -> tuple[tuple[httpx.Response, ...], float]:
        async with httpx.AsyncClient(
            http2=True,
            verify=verifying(sidecar_ca(timeout_sidecar)),
            base_url=f"https://127.0.0.1:{timeout_sidecar.port}",
            timeout=20,
        ) as client:
            await client.get("/warm-up")
            started = time.monotonic()
            responses = await asyncio.gather(
                client.get("/hang/never"),
                client.get("/fast"),
                client.post("/hang/h2-upload", content=binary_payload(64 * 1024)),
                client.get("/hang/after/0.2"),
            )
            return responses, time.monotonic() - started

    responses, elapsed = asyncio.run(exchange())
    assert elapsed < ROUTE_TIMEOUT + LEEWAY
    assert {response.http_version for response in responses} == {"HTTP/2"}
    assert len({id(response.extensions["network_stream"]) for response in responses}) == 1
    assert [response.status_code for response in responses] == [504, 200, 504, 200]
    assert responses[0].headers["content-type"] == "text/plain; charset=utf-8"
    assert responses[0].text.startswith("sidecar dispatcher: route hang: no response headers")


def test_a_destination_that_never_finishes_the_tls_handshake_times_out_too(
    timeout_sidecar: Sidecar, silent: Silent
) -> None:
    before = len(silent.accepted)
    started = time.monotonic()
    response = timeout_sidecar.request("GET", "/tls/never")
    assert time.monotonic() - started < ROUTE_TIMEOUT + LEEWAY
    assert response.status == 504
    assert response.body.startswith(b"sidecar dispatcher: route tls-hang: no response headers")
    accepted = silent.last_accepted(before)
    assert accepted.received.startswith(b"\x16\x03")  # a TLS ClientHello, never answered
    silent.wait_until_closed(accepted)


def test_metrics_count_a_504_and_an_upstream_error_of_kind_timeout(
    timeout_sidecar: Sidecar, silent: Silent
) -> None:
    def counts() -> tuple[float, float]:
        metrics = scrape(timeout_sidecar)
        labels = (("destination", f"http://127.0.0.1:{silent.port}"), ("rule", "hang"))
        requests = metrics.get("sidecar_dispatcher_requests_total", {})
        errors = metrics.get("sidecar_dispatcher_upstream_errors_total", {})
        return (
            requests.get(tuple(sorted((*labels, ("code", "504")))), 0.0),
            errors.get(tuple(sorted((*labels, ("kind", "timeout")))), 0.0),
        )

    answered, failed = counts()
    assert timeout_sidecar.request("GET", "/hang/counted").status == 504
    assert counts() == (answered + 1, failed + 1)


def test_the_access_log_line_says_504_and_timeout(timeout_sidecar: Sidecar, silent: Silent) -> None:
    assert timeout_sidecar.request("GET", "/hang/logged").status == 504
    logs = timeout_sidecar.wait_for_log("GET /hang/logged ")
    (line,) = [line for line in logs.splitlines() if "GET /hang/logged " in line]
    assert f"hang → http://127.0.0.1:{silent.port} (route hang matched)" in line
    assert re.search(r" 504 1[0-9]{3}\.[0-9]ms upstream_error=timeout$", line), line
    warning = f"hang → http://127.0.0.1:{silent.port}: no response headers within 1 s"
    assert warning in logs  # the destination is in the log, not in the client's answer


@pytest.fixture(scope="module")
def unreachable() -> Iterator[int]:
    """A port whose TCP connects hang: a listener that never accepts, its backlog full."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
    except TimeoutError:
        hangs = True
    else:
        hangs = False
    finally:
        probe.close()
    try:
        if not hangs:
            pytest.skip("this kernel completes connects to a full backlog (SYN cookies?)")
        yield port
    finally:
        for sock in (*fillers, listener):
            sock.close()


def test_a_connect_that_never_completes_times_out_too(
    save_config: SaveConfig, default_upstream: Upstream, unreachable: int, engine: str
) -> None:
    config = save_config(
        f"key: environment\ndestination: {default_upstream.url}\n"
        f"rewrites:\n  stuck:\n    destination: http://127.0.0.1:{unreachable}\n"
    )
    options = ["dispatcher_upstream_timeout=1"]
    with Sidecar(default_upstream.url, config=config, options=options, engine=engine) as sidecar:
        started = time.monotonic()
        response = sidecar.request("GET", "/x", [("environment", "stuck")])
        assert time.monotonic() - started < 1 + LEEWAY
        assert response.status == 504
        assert sidecar.request("GET", "/after").status == 200


# --- in this process: nothing outlives its request


@dataclass
class InProcess:
    """The runner's master serving from a thread of this process, to look inside it."""

    lean: master.Master
    loop: asyncio.AbstractEventLoop
    port: int

    def timeouts(self) -> UpstreamTimeouts:
        dispatcher: Dispatcher = self.lean.addons.get("dispatcher")
        (found,) = [a for a in dispatcher.addons if isinstance(a, UpstreamTimeouts)]
        return found

    def census(self) -> tuple[int, int, int]:
        """Tasks, timers pending (not cancelled), and flows waiting for response headers."""

        async def count() -> tuple[int, int, int]:
            loop = asyncio.get_running_loop()
            scheduled = getattr(loop, "_scheduled", [])
            timers = sum(1 for handle in scheduled if not handle.cancelled())
            return len(asyncio.all_tasks()) - 1, timers, len(self.timeouts().clocks)

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(5)

    def settled_census(
        self, expected: tuple[int, int, int], timeout: float = 5.0
    ) -> tuple[int, int, int]:
        """The census once it equals `expected`, or as it is after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (found := self.census()) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture
def in_process(
    save_config: SaveConfig, default_upstream: Upstream, silent: Silent, tmp_path: Path
) -> Iterator[InProcess]:
    config = save_config(timeout_config(default_upstream.url, silent.port))
    port = free_port()
    started: list[InProcess] = []
    failed: list[BaseException] = []

    async def serve() -> None:
        try:
            lean = build_master(
                [
                    f"mode=reverse:{default_upstream.url}@{port}",
                    "listen_host=127.0.0.1",
                    f"confdir={tmp_path}",
                    f"dispatcher_config={config}",
                    "dispatcher_admin=",
                    "termlog_verbosity=warn",
                ],
                reuse_port=False,
            )
        except BaseException as e:
            failed.append(e)
            raise
        started.append(InProcess(lean, asyncio.get_running_loop(), port))
        await lean.run()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (started and accepts(port)):
        assert thread.is_alive() and time.monotonic() < deadline, failed or "not listening"
        time.sleep(0.05)
    yield started[0]
    started[0].lean.shutdown()
    thread.join(10)


def test_no_timer_or_task_outlives_its_request(in_process: InProcess) -> None:
    assert send(in_process.port, "GET", "/warm-up").status == 200
    time.sleep(0.5)  # the warm-up's connections wind down
    baseline = in_process.census()
    assert baseline[2] == 0
    connection = http.client.HTTPConnection("127.0.0.1", in_process.port, timeout=10)
    try:
        for number in range(100):
            connection.request("GET", f"/fast/{number}")
            assert connection.getresponse().read()
            if number == 50:  # during the run: one clock at most, the request's own
                assert in_process.census()[2] == 0
        for _ in range(3):
            connection.request("GET", "/hang/never")
            response = connection.getresponse()
            response.read()
            assert response.status == 504
    finally:
        connection.close()
    assert in_process.settled_census(baseline) == baseline
