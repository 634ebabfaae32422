"""Mirroring: the copy a mirror gets, sending it, and the addon starting copies in the background.

The addon's tests replace `send` with a recorder (`FakeSend`), so that they see each copy and
decide when and how it ends; `send` itself is tested against in-process loopback servers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress

import pytest
from mitmproxy import exceptions, http
from mitmproxy.proxy.layers.http import HttpRequestHook  # type: ignore[attr-defined]

from sidecar_dispatcher.config.destinations import parse_destination
from sidecar_dispatcher.config.load import parse_config
from sidecar_dispatcher.core.header_edits import HeaderList
from sidecar_dispatcher.core.model import Destination
from sidecar_dispatcher.core.resolve import resolve
from sidecar_dispatcher.observe.metrics import MIRROR_REQUESTS
from sidecar_dispatcher.proxy import mirror as mirror_module
from sidecar_dispatcher.proxy.mirror import MAX_BODY, MIRROR_METADATA_KEY, Mirror
from sidecar_dispatcher.proxy.mirror_copy import (
    MirrorCopy,
    NotHttp,
    mirror_path,
    send,
    status_of,
    tls_context,
)
from sidecar_dispatcher.testing.loopback import free_port

from .conftest import WriteConfig
from .flows import Harness, make_flow

SHADOW = Destination("http", "shadow.test", 9000, "/v2")

MIRROR_CONFIG = """
key: environment
destination: http://default.test:8081
routes:
  - name: shadowed
    match: {path: {prefix: /api/}}
    destination: http://api.test:8080/v1
    remove: [Authorization]
    patch: [{key: X-Env, val: prod}]
    mirror: {destination: "http://shadow.test:9000/v2"}
  - name: plain
    match: {path: {prefix: /plain/}}
    destination: http://api.test:8080
"""


def run[T](scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()

    return asyncio.run(main())


# --- the copy


def head_lines(copy: MirrorCopy) -> list[bytes]:
    assert copy.head.endswith(b"\r\n\r\n")
    return copy.head[:-4].split(b"\r\n")


def test_copy_is_http11_with_the_mirror_host_a_length_and_connection_close() -> None:
    fields = [(b"Host", b"api.test"), (b"X-Env", b"prod"), (b"Content-Length", b"5")]
    copy = MirrorCopy.of(SHADOW, "POST", "/v2/x?q=1", fields, b"hello", http2=False)
    assert head_lines(copy) == [
        b"POST /v2/x?q=1 HTTP/1.1",
        b"Host: shadow.test:9000",
        b"X-Env: prod",
        b"Content-Length: 5",
        b"Connection: close",
    ]
    assert copy.body == b"hello"


def test_copy_drops_hop_by_hop_fields_and_those_connection_names() -> None:
    fields = [
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"TE", b"trailers"),
        (b"Upgrade", b"h2c"),
        (b"Expect", b"100-continue"),
        (b"X-Kept", b"yes"),
    ]
    copy = MirrorCopy.of(SHADOW, "PUT", "/", fields, b"abc", http2=False)
    assert head_lines(copy)[2:] == [b"X-Kept: yes", b"Content-Length: 3", b"Connection: close"]


def test_copy_of_a_request_without_body_or_framing_has_no_content_length() -> None:
    copy = MirrorCopy.of(SHADOW, "GET", "/", [(b"Accept", b"*/*")], b"", http2=False)
    assert b"Content-Length" not in copy.head


def test_copy_of_an_empty_framed_body_says_content_length_0() -> None:
    copy = MirrorCopy.of(SHADOW, "POST", "/", [(b"Content-Length", b"0")], b"", http2=False)
    assert b"Content-Length: 0\r\n" in copy.head


def test_copy_of_an_http2_request_joins_its_cookie_fields() -> None:
    fields = [(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")]
    copy = MirrorCopy.of(SHADOW, "GET", "/", fields, b"", http2=True)
    assert head_lines(copy)[2:4] == [b"accept: */*", b"cookie: a=1; b=2"]


def test_copy_refuses_a_line_break_that_would_split_its_head() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        MirrorCopy.of(SHADOW, "GET", "/", [(b"X-Bad", b"a\r\nInjected: 1")], b"", http2=False)


@pytest.mark.parametrize(
    ("path", "primary_base", "mirror", "expected"),
    [
        ("/x?q=1", "", "http://shadow.test", "/x?q=1"),
        ("/v1/x?q=1", "/v1", "http://shadow.test/v2", "/v2/x?q=1"),
        ("/v1/x", "/v1", "http://shadow.test", "/x"),
        ("/x", "", "http://shadow.test/v2", "/v2/x"),
        ("/v1x", "/v1", "http://shadow.test", "/v1x"),  # not under the base: left alone
        ("*", "", "http://shadow.test/v2", "*"),
    ],
)
def test_mirror_path_swaps_the_primary_base_path_for_the_mirrors(
    path: str, primary_base: str, mirror: str, expected: str
) -> None:
    assert mirror_path(path, primary_base, parse_destination(mirror)) == expected


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"HTTP/1.1 200 OK\r\n", 200), (b"HTTP/1.0 503\r\n", 503), (b"HTTP/1.1 404 \n", 404)],
)
def test_status_of_reads_an_http1_status_line(line: bytes, status: int) -> None:
    assert status_of(line) == status


@pytest.mark.parametrize("line", [b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 20 OK\r\n", b""])
def test_status_of_refuses_anything_else(line: bytes) -> None:
    with pytest.raises(NotHttp):
        status_of(line)


def test_tls_context_verifies_by_default_and_not_when_insecure() -> None:
    default = tls_context(insecure=False, cafile=None, capath=None)
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    assert default.cert_store_stats()["x509_ca"] > 0  # certifi's bundle
    insecure = tls_context(insecure=True, cafile=None, capath=None)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname


# --- sending it, to servers in this process


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, Destination]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Destination("http", "127.0.0.1", port)


@pytest.mark.spawns
def test_send_writes_the_copy_and_returns_the_mirrors_status() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.append(head + await reader.readexactly(5))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    async def scenario() -> tuple[int, int]:
        server, destination = await serve(handler)
        async with server:
            copy = MirrorCopy.of(destination, "POST", "/x", [], b"hello", http2=False)
            return await send(copy, tls=None, timeout=5), destination.port

    status, port = run(scenario)
    assert status == 201
    assert received == [
        b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 5\r\n" % port
        + b"Connection: close\r\n\r\nhello"
    ]


@pytest.mark.spawns
def test_send_to_a_closed_port_raises_oserror() -> None:
    closed = Destination("http", "127.0.0.1", free_port())
    copy = MirrorCopy.of(closed, "GET", "/", [], b"", http2=False)
    with pytest.raises(OSError):
        run(lambda: send(copy, tls=None, timeout=5))


@pytest.mark.spawns
def test_send_gives_up_on_a_mirror_that_does_not_answer_in_time() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; the client gives up first
        writer.close()

    async def scenario() -> float:
        server, destination = await serve(silent)
        async with server:
            copy = MirrorCopy.of(destination, "GET", "/", [], b"", http2=False)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await send(copy, tls=None, timeout=0.2)
            return loop.time() - started

    assert run(scenario) < 2


@pytest.mark.spawns
def test_send_raises_when_the_mirror_closes_without_answering() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def scenario() -> None:
        server, destination = await serve(rude)
        async with server:
            copy = MirrorCopy.of(destination, "GET", "/", [], b"", http2=False)
            with pytest.raises(asyncio.IncompleteReadError):
                await send(copy, tls=None, timeout=5)

    run(scenario)


# --- sampling


def test_a_mirror_at_25_percent_copies_about_a_quarter_of_requests() -> None:
    rules = parse_config(
        "key: environment\ndestination: http://default.test\nroutes:\n"
        "  - {name: m, mirror: {destination: http://shadow.test, percent: 25}}\n",
        "mirror.yaml",
    )
    chooser = random.Random(20240601).random
    decisions = [
        resolve(rules, HeaderList(), client_ip=None, path="/", keep_host=False, chooser=chooser)
        for _ in range(4000)
    ]
    mirrored = sum(decision.mirror is not None for decision in decisions)
    assert 0.20 < mirrored / len(decisions) < 0.30


# --- the addon


class FakeSend:
    """Stands in for `mirror_copy.send`: records each copy; `gate` holds copies in flight."""

    def __init__(self) -> None:
        self.copies: list[MirrorCopy] = []
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(
        self, copy: MirrorCopy, *, tls: ssl.SSLContext | None, timeout: float
    ) -> int:
        self.copies.append(copy)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return 200


@pytest.fixture
def fake_send(monkeypatch: pytest.MonkeyPatch) -> FakeSend:
    fake = FakeSend()
    monkeypatch.setattr(mirror_module, "send", fake)
    return fake


@pytest.fixture
def mirroring(harness: Harness, write_config: WriteConfig) -> Iterator[Harness]:
    """The harness with MIRROR_CONFIG, metrics counting as with an admin listener."""
    harness.tctx.configure(harness.dispatcher, dispatcher_config=str(write_config(MIRROR_CONFIG)))
    harness.dispatcher.metrics.enabled = True
    yield harness


def mirror_of(harness: Harness) -> Mirror:
    return next(addon for addon in harness.dispatcher.addons if isinstance(addon, Mirror))


def counted(harness: Harness, result: str, rule: str = "shadowed") -> float:
    registry = harness.dispatcher.metrics.metrics.registry
    value = registry.get_sample_value(f"{MIRROR_REQUESTS}_total", {"rule": rule, "result": result})
    return value or 0.0


async def request_hook(harness: Harness, flow: http.HTTPFlow) -> http.HTTPFlow:
    """requestheaders then request, as mitmproxy sends them for a complete body; then lets the
    copies started run until they are done."""
    harness.dispatch(flow)
    harness.hook(HttpRequestHook(flow))
    await settle(harness)
    return flow


async def settle(harness: Harness) -> None:
    for _ in range(100):
        await asyncio.sleep(0)
        if not mirror_of(harness).in_flight:
            return


def api_post(body: bytes = b'{"n": 1}') -> http.HTTPFlow:
    flow = make_flow(("Authorization", "Bearer x"), ("Accept", "*/*"), path="/api/items?q=1")
    flow.request.method = "POST"
    flow.request.content = body  # sets Content-Length
    return flow


def test_no_copy_when_the_decision_has_no_mirror(mirroring: Harness, fake_send: FakeSend) -> None:
    async def scenario() -> None:
        for flow in (make_flow(path="/plain/x"), make_flow(("environment", "dev"))):
            await request_hook(mirroring, flow)
            assert MIRROR_METADATA_KEY not in flow.metadata

    run(scenario)
    assert fake_send.copies == []


def test_copy_has_the_method_path_headers_after_edits_and_body(
    mirroring: Harness, fake_send: FakeSend
) -> None:
    flow = run(lambda: request_hook(mirroring, api_post()))
    assert flow.request.host == "api.test"  # the primary request is as the route says
    (copy,) = fake_send.copies
    assert copy.destination == SHADOW
    lines = head_lines(copy)
    assert lines[0] == b"POST /v2/api/items?q=1 HTTP/1.1"  # the mirror's base path, not /v1
    assert lines[1] == b"Host: shadow.test:9000"
    fields = dict(line.split(b": ", 1) for line in lines[2:])
    assert b"Authorization" not in fields  # removed by the route, as for the primary
    assert fields[b"X-Env"] == b"prod"
    assert fields[b"X-Forwarded-For"] == flow.request.headers["X-Forwarded-For"].encode()
    assert fields[b"Accept"] == b"*/*"
    assert fields[b"Content-Length"] == b"8"  # set anew for the body sent
    assert fields[b"Connection"] == b"close"
    assert copy.body == b'{"n": 1}'
    assert flow.metadata[MIRROR_METADATA_KEY] == "scheduled"
    assert flow.comment.endswith("; mirrored to http://shadow.test:9000/v2")
    assert counted(mirroring, "sent") == 1


def test_copies_beyond_the_concurrency_are_dropped_and_counted(
    mirroring: Harness, fake_send: FakeSend
) -> None:
    mirror = mirror_of(mirroring)
    mirroring.tctx.configure(mirror, dispatcher_mirror_concurrency=2)

    async def scenario() -> list[str]:
        fake_send.gate = asyncio.Event()
        flows = [api_post() for _ in range(3)]
        for flow in flows:
            mirroring.dispatch(flow)
            mirroring.hook(HttpRequestHook(flow))
        assert len(mirror.in_flight) == 2
        fake_send.gate.set()
        await settle(mirroring)
        return [flow.metadata[MIRROR_METADATA_KEY] for flow in flows]

    assert run(scenario) == ["scheduled", "scheduled", "dropped"]
    assert len(fake_send.copies) == 2
    assert (counted(mirroring, "sent"), counted(mirroring, "dropped")) == (2, 1)
    assert not mirror.in_flight  # a slot frees when its copy ends


def test_concurrency_0_sends_no_copy(mirroring: Harness, fake_send: FakeSend) -> None:
    mirroring.tctx.configure(mirror_of(mirroring), dispatcher_mirror_concurrency=0)
    run(lambda: request_hook(mirroring, api_post()))
    assert fake_send.copies == []
    assert counted(mirroring, "dropped") == 1


def test_negative_concurrency_is_refused(mirroring: Harness) -> None:
    with pytest.raises(exceptions.OptionsError, match="dispatcher_mirror_concurrency must be 0"):
        mirroring.tctx.configure(mirror_of(mirroring), dispatcher_mirror_concurrency=-1)


def test_a_body_over_the_limit_is_not_copied_and_counted(
    mirroring: Harness, fake_send: FakeSend
) -> None:
    at_limit = run(lambda: request_hook(mirroring, api_post(b"x" * MAX_BODY)))
    over = run(lambda: request_hook(mirroring, api_post(b"x" * (MAX_BODY + 1))))
    assert at_limit.metadata[MIRROR_METADATA_KEY] == "scheduled"
    assert over.metadata[MIRROR_METADATA_KEY] == "too_large"
    assert len(fake_send.copies) == 1
    assert counted(mirroring, "too_large") == 1
    assert over.request.content == b"x" * (MAX_BODY + 1)  # the primary request keeps it


def test_a_streamed_body_is_not_copied(mirroring: Harness, fake_send: FakeSend) -> None:
    flow = api_post()
    flow.request.stream = True

    async def scenario() -> None:
        mirroring.dispatch(flow)
        flow.request.data.content = None  # streamed through, not kept
        mirroring.hook(HttpRequestHook(flow))

    run(scenario)
    assert fake_send.copies == []
    assert flow.metadata[MIRROR_METADATA_KEY] == "too_large"


def test_a_failing_mirror_is_counted_and_never_touches_the_flow(
    mirroring: Harness, fake_send: FakeSend
) -> None:
    fake_send.error = ConnectionRefusedError(111, "Connection refused")
    flow = run(lambda: request_hook(mirroring, api_post()))
    assert counted(mirroring, "failed") == 1
    assert flow.error is None and flow.response is None
    assert flow.request.host == "api.test"


def test_a_copy_that_cannot_be_built_is_counted_as_failed(
    mirroring: Harness, fake_send: FakeSend
) -> None:
    flow = api_post()

    async def with_a_bad_header_added_after_the_checks() -> http.HTTPFlow:
        mirroring.dispatch(flow)  # RequestHygiene would refuse it before
        flow.request.headers.fields += ((b"X-Worse", b"a\nb"),)
        mirroring.hook(HttpRequestHook(flow))
        await settle(mirroring)
        return flow

    run(with_a_bad_header_added_after_the_checks)
    assert fake_send.copies == []
    assert counted(mirroring, "failed") == 1
    assert flow.error is None


def test_results_are_logged_at_debug_only(
    mirroring: Harness, fake_send: FakeSend, caplog: pytest.LogCaptureFixture
) -> None:
    fake_send.error = ConnectionRefusedError(111, "Connection refused")
    with caplog.at_level(logging.DEBUG, logger="sidecar_dispatcher"):
        run(lambda: request_hook(mirroring, api_post()))
    records = [record for record in caplog.records if record.name == mirror_module.__name__]
    assert [record.levelno for record in records] == [logging.DEBUG]
    assert (
        records[0]
        .getMessage()
        .startswith("shadowed → mirror http://shadow.test:9000/v2: POST /v2/api/items failed after")
    )


def test_nothing_is_counted_while_metrics_are_off(mirroring: Harness, fake_send: FakeSend) -> None:
    mirroring.dispatcher.metrics.enabled = False
    run(lambda: request_hook(mirroring, api_post()))
    assert len(fake_send.copies) == 1
    assert counted(mirroring, "sent") == 0


def test_replays_and_answered_requests_are_not_mirrored(
    mirroring: Harness, fake_send: FakeSend
) -> None:
    async def scenario() -> None:
        replayed = api_post()
        mirroring.dispatch(replayed)
        replayed.is_replay = "request"
        mirroring.hook(HttpRequestHook(replayed))
        answered = api_post()
        mirroring.dispatch(answered)
        answered.response = http.Response.make(403, b"refused by a script")
        mirroring.hook(HttpRequestHook(answered))

    run(scenario)
    assert fake_send.copies == []


def test_a_websocket_handshake_is_not_mirrored(mirroring: Harness, fake_send: FakeSend) -> None:
    flow = make_flow(("Connection", "Upgrade"), ("Upgrade", "websocket"), path="/api/ws")
    run(lambda: request_hook(mirroring, flow))
    assert fake_send.copies == []
    assert MIRROR_METADATA_KEY not in flow.metadata


def test_done_cancels_copies_in_flight(mirroring: Harness, fake_send: FakeSend) -> None:
    mirror = mirror_of(mirroring)

    async def scenario() -> None:
        fake_send.gate = asyncio.Event()  # never set
        flow = api_post()
        mirroring.dispatch(flow)
        mirroring.hook(HttpRequestHook(flow))
        (task,) = mirror.in_flight
        await asyncio.sleep(0)
        mirror.done()
        with suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()

    run(scenario)
    assert counted(mirroring, "failed") == 0


def test_https_mirrors_follow_mitmproxys_upstream_trust(mirroring: Harness) -> None:
    mirror = mirror_of(mirroring)
    mirroring.tctx.configure(mirror, ssl_insecure=True)
    assert mirror.tls().verify_mode == ssl.CERT_NONE
    mirroring.tctx.configure(mirror, ssl_insecure=False)
    assert mirror.tls().verify_mode == ssl.CERT_REQUIRED
