"""End to end: routes mirrored to real loopback servers, through mitmdump and the runner.

The mirror gets the request as the primary destination does; a mirror that is down, slow,
untrusted or full changes nothing the client sees, and each copy's result is counted in
/metrics. The slow mirror holds every request until the test releases it (the sidecar gives up
after `mirror.TIMEOUT`, 5 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from sidecar_dispatcher.proxy.mirror import MAX_BODY, TIMEOUT
from sidecar_dispatcher.testing.loopback import Response

from .conftest import SaveConfig
from .processes import LoopbackServer, Received, Sidecar, Upstream, binary_payload
from .protocol_servers import HttpsUpstream, https_url

FAST = 1.0  # seconds: a primary answer on loopback takes milliseconds; a held mirror, 5 s
HOLD_LIMIT = 15.0  # seconds the slow mirror holds a request at most, whatever the test does
WAIT = 10.0  # seconds to wait for a copy to arrive or be counted


class _HoldingHandler(BaseHTTPRequestHandler):
    """Records the request, then answers only when the server's `release` is set."""

    protocol_version = "HTTP/1.1"
    upstream: SlowUpstream

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.upstream.received.append(
            Received(self.command, self.path, list(self.headers.items()), body)
        )
        self.upstream.release.wait(HOLD_LIMIT)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the sidecar gave up on this copy long ago

    do_GET = do_POST = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class SlowUpstream(LoopbackServer):
    """A mirror that takes its time: holds each request until `release` is set."""

    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    handler_base: ClassVar[type[BaseHTTPRequestHandler]] = _HoldingHandler

    def stop(self) -> None:
        self.release.set()
        super().stop()


# --- the servers, the config and the sidecar


# Servers record what they receive: one of each per engine, so that each round starts afresh.


@pytest.fixture(scope="module")
def primary(engine: str) -> Iterator[Upstream]:
    with Upstream("primary") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def shadow(engine: str) -> Iterator[Upstream]:
    with Upstream("shadow") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def slow(engine: str) -> Iterator[SlowUpstream]:
    with SlowUpstream("slow") as upstream:
        yield upstream


@pytest.fixture
def held(slow: SlowUpstream) -> Iterator[SlowUpstream]:
    """The slow mirror holding what this test sends it, released when the test ends."""
    slow.release = threading.Event()
    yield slow
    slow.release.set()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_pem(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def secure_shadow(ca: trustme.CA, engine: str) -> Iterator[Upstream]:
    with HttpsUpstream("secure-shadow", certificate=ca.issue_cert("localhost")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def misnamed_shadow(ca: trustme.CA, engine: str) -> Iterator[Upstream]:
    """Trusted CA, but a certificate for another name: verification must refuse it."""
    with HttpsUpstream("misnamed", certificate=ca.issue_cert("example.com")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def mirror_config(
    *,
    save_config: SaveConfig,
    default_upstream: Upstream,
    primary: Upstream,
    shadow: Upstream,
    secure_shadow: Upstream,
    misnamed_shadow: Upstream,
    slow: SlowUpstream,
    closed_port: int,
) -> Path:
    return save_config(
        f"""\
key: environment
destination: {default_upstream.url}
routes:
  - name: copied
    match: {{path: {{prefix: /copied/}}}}
    destination: {primary.url}/v1
    remove: [Authorization]
    patch: [{{key: X-Env, val: prod}}]
    mirror: {{destination: "{shadow.url}/v2"}}
  - name: copied-down
    match: {{path: {{prefix: /down/}}}}
    destination: {primary.url}
    mirror: {{destination: "http://127.0.0.1:{closed_port}"}}
  - name: copied-slow
    match: {{path: {{prefix: /slow/}}}}
    destination: {primary.url}
    mirror: {{destination: "{slow.url}"}}
  - name: copied-tls
    match: {{path: {{prefix: /tls/}}}}
    destination: {primary.url}
    mirror: {{destination: "{https_url(secure_shadow)}"}}
  - name: copied-untrusted
    match: {{path: {{prefix: /untrusted/}}}}
    destination: {primary.url}
    mirror: {{destination: "{https_url(misnamed_shadow)}"}}
  - name: sampled
    match: {{path: {{prefix: /sampled/}}}}
    destination: {primary.url}
    mirror: {{destination: "{shadow.url}", percent: 50}}
"""
    )


@pytest.fixture(scope="module")
def sidecar(
    mirror_config: Path, default_upstream: Upstream, ca_pem: Path, engine: str
) -> Iterator[Sidecar]:
    """Trusts the test CA for destinations, and so for mirrors; /metrics on its admin port."""
    options = [f"ssl_verify_upstream_trusted_ca={ca_pem}"]
    with Sidecar(
        default_upstream.url, config=mirror_config, options=options, engine=engine, admin=True
    ) as process:
        yield process


# --- helpers


def mirror_counts(sidecar: Sidecar) -> dict[tuple[str, str], float]:
    """{(rule, result): copies} from the sidecar's /metrics."""
    response = sidecar.admin("/metrics")
    assert response.status == 200, response.body
    counts = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            if sample.name == "sidecar_dispatcher_mirror_requests_total":
                counts[(sample.labels["rule"], sample.labels["result"])] = sample.value
    return counts


def wait_for(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout}s"
        time.sleep(0.05)


def received_under(upstream: Upstream | SlowUpstream, prefix: str) -> list[Received]:
    return [request for request in upstream.received if request.path.startswith(prefix)]


def timed(call: Callable[..., Response], *arguments: Any) -> tuple[Response, float]:
    """What `call(*arguments)` returned, and how many seconds it took."""
    started = time.monotonic()
    result = call(*arguments)
    return result, time.monotonic() - started


def comparable(request: Received) -> list[tuple[str, str]]:
    """Its header fields but those of its own connection (Host, Connection), in name order."""
    return sorted(
        (name.lower(), value)
        for name, value in request.headers
        if name.lower() not in ("host", "connection")
    )


# --- the tests


def test_the_mirror_gets_the_request_as_the_primary_destination_does(
    sidecar: Sidecar, primary: Upstream, shadow: Upstream
) -> None:
    body = binary_payload(200_000)
    headers = [
        ("Authorization", "Bearer s3cret"),  # the route removes it: from the copy too
        ("X-Custom", "a"),
        ("Cookie", "s=1; t=2"),
        ("Content-Type", "application/octet-stream"),
    ]
    response = sidecar.request("POST", "/copied/items?id=7&tag=a%20b", headers, body)
    assert response.status == 200
    assert response.json()["upstream"] == "primary"
    wait_for("copied", lambda: bool(received_under(shadow, "/v2/copied/items")))
    (original,) = received_under(primary, "/v1/copied/items")
    (copy,) = received_under(shadow, "/v2/copied/items")
    assert original.path == "/v1/copied/items?id=7&tag=a%20b"
    assert copy.path == "/v2/copied/items?id=7&tag=a%20b"  # the mirror's base path instead
    assert copy.method == "POST"
    assert copy.body == body
    assert comparable(copy) == comparable(original)
    assert copy.all("Host") == [f"127.0.0.1:{shadow.port}"]
    assert copy.all("Connection") == ["close"]
    assert copy.header("Authorization") is None
    assert copy.all("X-Env") == ["prod"]
    wait_for("counted", lambda: mirror_counts(sidecar).get(("copied", "sent")) == 1)


def test_a_body_over_the_limit_goes_to_the_primary_only(
    sidecar: Sidecar, primary: Upstream, shadow: Upstream
) -> None:
    body = binary_payload(MAX_BODY + 1)
    response = sidecar.request("PUT", "/copied/big", (), body)
    assert response.status == 200
    assert received_under(primary, "/v1/copied/big")[-1].body == body
    assert mirror_counts(sidecar).get(("copied", "too_large")) == 1  # counted in the hook
    assert received_under(shadow, "/v2/copied/big") == []


def test_a_streamed_body_goes_to_the_primary_only(
    mirror_config: Path, default_upstream: Upstream, primary: Upstream, engine: str
) -> None:
    body = binary_payload(100_000)  # under the limit, but streamed: mitmproxy keeps none of it
    options = ["stream_large_bodies=10k"]
    with Sidecar(
        default_upstream.url, config=mirror_config, options=options, engine=engine, admin=True
    ) as process:
        assert process.request("POST", "/copied/streamed", (), body).status == 200
        assert received_under(primary, "/v1/copied/streamed")[-1].body == body
        wait_for("counted", lambda: mirror_counts(process).get(("copied", "too_large")) == 1)


def test_a_mirror_that_is_down_changes_nothing_for_the_client(sidecar: Sidecar) -> None:
    for _ in range(3):
        response, seconds = timed(sidecar.request, "GET", "/down/x?q=1")
        assert response.status == 200
        assert seconds < FAST
        echoed = response.json()
        assert (echoed["upstream"], echoed["path"]) == ("primary", "/down/x?q=1")
    wait_for("counted", lambda: mirror_counts(sidecar).get(("copied-down", "failed")) == 3)
    assert "→ mirror" not in sidecar.logs()  # DEBUG only


def test_a_slow_mirror_never_delays_the_primary(sidecar: Sidecar, held: SlowUpstream) -> None:
    for index in range(3):
        response, seconds = timed(sidecar.request, "POST", f"/slow/{index}", (), b"data")
        assert response.status == 200
        assert seconds < FAST
        assert response.json()["upstream"] == "primary"
    wait_for("held", lambda: len(received_under(held, "/slow/")) == 3)
    assert [request.body for request in received_under(held, "/slow/")] == [b"data"] * 3
    assert mirror_counts(sidecar).get(("copied-slow", "sent")) is None  # still waiting
    # The sidecar gives up on each copy after TIMEOUT seconds; the client never knew.
    wait_for(
        "given up",
        lambda: mirror_counts(sidecar).get(("copied-slow", "failed")) == 3,
        timeout=TIMEOUT + WAIT,
    )


def test_an_https_mirror_is_verified_with_the_sidecars_trust(
    sidecar: Sidecar, secure_shadow: Upstream
) -> None:
    assert sidecar.request("GET", "/tls/x").status == 200
    wait_for("copied over TLS", lambda: bool(received_under(secure_shadow, "/tls/")))
    assert received_under(secure_shadow, "/tls/")[0].all("Host") == [
        f"localhost:{secure_shadow.port}"
    ]
    wait_for("counted", lambda: mirror_counts(sidecar).get(("copied-tls", "sent")) == 1)


def test_an_https_mirror_with_a_certificate_for_another_name_gets_nothing(
    sidecar: Sidecar, misnamed_shadow: Upstream
) -> None:
    response = sidecar.request("GET", "/untrusted/x")
    assert response.status == 200
    assert response.json()["upstream"] == "primary"
    wait_for("counted", lambda: mirror_counts(sidecar).get(("copied-untrusted", "failed")) == 1)
    assert received_under(misnamed_shadow, "/untrusted/") == []


def test_a_sampled_route_mirrors_about_its_percentage(sidecar: Sidecar, shadow: Upstream) -> None:
    requests = 100
    for index in range(requests):
        assert sidecar.request("GET", f"/sampled/{index}").status == 200

    def settled() -> bool:  # every copy started has arrived and been counted, twice in a row
        first = len(received_under(shadow, "/sampled/"))
        time.sleep(0.3)
        counted = mirror_counts(sidecar).get(("sampled", "sent"), 0)
        return first == len(received_under(shadow, "/sampled/")) == counted

    wait_for("settled", settled)
    copies = len(received_under(shadow, "/sampled/"))
    assert 25 <= copies <= 75, f"{copies} of {requests} mirrored at 50 %"  # ±5 standard deviations


def test_copies_beyond_the_concurrency_are_dropped_and_counted(
    mirror_config: Path,
    default_upstream: Upstream,
    shadow: Upstream,
    held: SlowUpstream,
    engine: str,
) -> None:
    options = ["dispatcher_mirror_concurrency=1"]
    with Sidecar(
        default_upstream.url, config=mirror_config, options=options, engine=engine, admin=True
    ) as process:
        assert process.request("GET", "/slow/holding-the-only-slot").status == 200
        wait_for("held", lambda: bool(received_under(held, "/slow/holding")))
        for index in range(3):
            response, seconds = timed(process.request, "GET", f"/copied/dropped-{index}")
            assert response.status == 200
            assert seconds < FAST
        assert mirror_counts(process).get(("copied", "dropped")) == 3  # counted in the hook
        held.release.set()
        wait_for("freed", lambda: mirror_counts(process).get(("copied-slow", "sent")) == 1)
        assert process.request("GET", "/copied/after").status == 200
        wait_for("sent", lambda: mirror_counts(process).get(("copied", "sent")) == 1)
    assert received_under(shadow, "/v2/copied/dropped-") == []
    assert len(received_under(shadow, "/v2/copied/after")) == 1
