"""End to end: HTTP/2 clients over TLS on the sidecar's listener, dispatched like HTTP/1.

No extra set-up is needed for TLS on the listener. In reverse mode mitmproxy peeks at a new
connection's first bytes: a TLS ClientHello gets a TLS layer (mitmproxy's `next_layer`
addon, `_setup_reverse_proxy`), whatever the reverse-mode scheme. So the same port serves
plain HTTP and TLS. The certificate is minted on the fly for the client's SNI (or the address
it connected to) and signed by the CA in the sidecar's confdir (`mitmproxy-ca-cert.pem`), or
taken from `--set certs=...` when given. The reverse-mode target stays `http://`: an `https://`
target would only change how the *reverse target* is reached (which the dispatcher never uses,
see README) and would also bind a UDP port for HTTP/3. With `connection_strategy=lazy`, which
the addon sets, nothing connects upstream before the request, so ALPN with the client is decided
without the destination: mitmproxy picks the first protocol *in the client's order* that it
supports (`alpn_select_callback` in tlsconfig). h2 is negotiated for clients that list it first,
as browsers and curl do; the HTTP/1.1 destinations behind are spoken to in HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from .processes import Sidecar, Upstream, binary_payload


class PreferH2Context(ssl.SSLContext):
    """An SSL context that offers h2 before http/1.1, as browsers and curl do.

    httpcore offers ALPN ["http/1.1", "h2"] in that order, and mitmproxy honours the client's
    order, so a stock `httpx.Client(http2=True)` speaks HTTP/1.1 through the sidecar.
    """

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        super().set_alpn_protocols(sorted(alpn_protocols, key=lambda name: name != "h2"))


@pytest.fixture(scope="module")
def tls_sidecar(config_file: Path, default_upstream: Upstream) -> Iterator[Sidecar]:
    """The sidecar as in test_dispatch.py: nothing TLS-specific is configured."""
    with Sidecar(default_upstream.url, config=config_file) as process:
        yield process


def sidecar_ca(sidecar: Sidecar) -> Path:
    path = Path(sidecar.confdir) / "mitmproxy-ca-cert.pem"
    assert path.is_file(), "mitmproxy writes its CA to the confdir at start-up"
    return path


def verifying(ca: Path, context_class: type[ssl.SSLContext] = PreferH2Context) -> ssl.SSLContext:
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the hostname
    context.load_verify_locations(cafile=ca)
    return context


@pytest.fixture
def h2_client(tls_sidecar: Sidecar) -> Iterator[httpx.Client]:
    with httpx.Client(
        http2=True,
        verify=verifying(sidecar_ca(tls_sidecar)),
        base_url=f"https://127.0.0.1:{tls_sidecar.port}",
        timeout=20,
    ) as client:
        yield client


def test_http2_request_with_key_goes_to_its_destination_with_patches(
    h2_client: httpx.Client, dev_upstream: Upstream
) -> None:
    body = binary_payload(100_000)
    response = h2_client.post("/h2/items?id=7", headers={"environment": "dev"}, content=body)
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert response.json()["upstream"] == "dev"
    received = dev_upstream.last()
    assert received.method == "POST"
    assert received.path == "/base/h2/items?id=7"
    # The addon sets :authority; mitmproxy turns it into Host for the HTTP/1.1 destination.
    assert received.all("Host") == ["example.com"]
    assert received.all("dispatched") == ["true"]
    assert received.all("X-Forwarded-For") == ["127.0.0.1"]
    assert received.body == body


def test_http2_request_without_key_goes_to_default_unpatched(
    h2_client: httpx.Client, default_upstream: Upstream
) -> None:
    response = h2_client.get("/h2/plain")
    assert response.http_version == "HTTP/2"
    assert response.json()["upstream"] == "default"
    received = default_upstream.last()
    assert received.path == "/h2/plain"
    assert received.all("Host") == [f"127.0.0.1:{default_upstream.port}"]
    assert received.all("dispatched") == []


def test_http2_response_status_headers_and_binary_body_pass_intact(
    h2_client: httpx.Client,
) -> None:
    teapot = h2_client.get("/status/418", headers={"environment": "dev"})
    assert (teapot.http_version, teapot.status_code) == ("HTTP/2", 418)
    assert teapot.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert teapot.headers["x-upstream-header"] == "kept"
    binary = h2_client.get("/bytes/300000", headers={"environment": "dev"})
    assert binary.content == binary_payload(300_000, seed=3)


def test_concurrent_streams_on_one_connection_are_each_dispatched_by_their_key(
    tls_sidecar: Sidecar,
) -> None:
    async def exchange() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            http2=True,
            verify=verifying(sidecar_ca(tls_sidecar)),
            base_url=f"https://127.0.0.1:{tls_sidecar.port}",
            timeout=20,
        ) as client:
            await client.get("/warm-up")  # opens the one connection the streams then share
            return await asyncio.gather(
                *(
                    client.get(f"/stream/{i}", headers={"environment": "dev"} if i % 2 else {})
                    for i in range(10)
                )
            )

    responses = asyncio.run(exchange())
    assert {response.http_version for response in responses} == {"HTTP/2"}
    assert len({id(response.extensions["network_stream"]) for response in responses}) == 1
    assert len({response.extensions["stream_id"] for response in responses}) == 10
    for i, response in enumerate(responses):
        echoed = response.json()
        assert echoed["upstream"] == ("dev" if i % 2 else "default")
        assert echoed["path"] == (f"/base/stream/{i}" if i % 2 else f"/stream/{i}")


def test_the_same_port_serves_plain_http_and_tls(
    tls_sidecar: Sidecar, h2_client: httpx.Client
) -> None:
    plain = tls_sidecar.request("GET", "/", [("environment", "dev")])
    assert plain.json()["upstream"] == "dev"
    assert h2_client.get("/", headers={"environment": "dev"}).json()["upstream"] == "dev"


def test_client_preferring_http1_over_tls_gets_http1_and_is_dispatched(
    tls_sidecar: Sidecar, dev_upstream: Upstream
) -> None:
    with httpx.Client(
        http2=True,  # offers h2, but after http/1.1
        verify=verifying(sidecar_ca(tls_sidecar), ssl.SSLContext),
        base_url=f"https://127.0.0.1:{tls_sidecar.port}",
        timeout=20,
    ) as client:
        response = client.get("/h1", headers={"environment": "dev"})
    assert response.http_version == "HTTP/1.1"
    assert response.json()["upstream"] == "dev"
    assert dev_upstream.last().all("Host") == ["example.com"]
