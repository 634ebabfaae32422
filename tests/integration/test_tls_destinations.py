"""End to end: HTTPS destinations whose certificates a test CA (trustme) signed.

mitmproxy verifies a destination's certificate against the name of the host it connects to
(the destination's host, sent as SNI; an IP address is matched against the certificate's IP
addresses), never against the Host header the rule patches in. Its trust store is certifi's
bundle unless `ssl_verify_upstream_trusted_ca` names a PEM file of CAs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from sidecar_dispatcher.testing.configs import DISPATCHED, HOST, Rewrite, config_text

from .conftest import SaveConfig
from .processes import Sidecar, Upstream
from .protocol_servers import HttpsUpstream, https_url

UNKNOWN_CA = b"Certificate verify failed: unable to get local issuer certificate"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_pem(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def secure_upstream(ca: trustme.CA) -> Iterator[Upstream]:
    certificate = ca.issue_cert("localhost", "127.0.0.1")
    with HttpsUpstream("secure", certificate=certificate) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def misnamed_upstream(ca: trustme.CA) -> Iterator[Upstream]:
    """Trusted CA, but a certificate for example.com: the name the rule patches into Host."""
    with HttpsUpstream("misnamed", certificate=ca.issue_cert("example.com")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def tls_config(
    save_config: SaveConfig,
    default_upstream: Upstream,
    dev_upstream: Upstream,
    secure_upstream: Upstream,
    misnamed_upstream: Upstream,
) -> Path:
    rewrites = {
        "secure": Rewrite((HOST, DISPATCHED), f"{https_url(secure_upstream)}/base"),
        "secure-ip": Rewrite((), https_url(secure_upstream, "127.0.0.1")),
        "misnamed": Rewrite((HOST,), https_url(misnamed_upstream)),
        "dev": Rewrite((DISPATCHED,), dev_upstream.url),
    }
    return save_config(config_text(default_upstream.url, rewrites))


@pytest.fixture(scope="module")
def trusting_sidecar(
    tls_config: Path, ca_pem: Path, default_upstream: Upstream
) -> Iterator[Sidecar]:
    """Trusts the test CA, and only it, through ssl_verify_upstream_trusted_ca."""
    options = [f"ssl_verify_upstream_trusted_ca={ca_pem}"]
    with Sidecar(default_upstream.url, config=tls_config, options=options) as process:
        yield process


@pytest.fixture(scope="module")
def untrusting_sidecar(tls_config: Path, default_upstream: Upstream) -> Iterator[Sidecar]:
    """Trusts certifi's bundle, as without the option: not the test CA."""
    with Sidecar(default_upstream.url, config=tls_config) as process:
        yield process


def test_destination_signed_by_the_given_ca_is_verified_and_served(
    trusting_sidecar: Sidecar, secure_upstream: Upstream
) -> None:
    response = trusting_sidecar.request("GET", "/x?q=1", [("environment", "secure")])
    assert response.status == 200
    assert response.json()["upstream"] == "secure"
    received = secure_upstream.last()
    assert received.path == "/base/x?q=1"
    assert received.all("Host") == ["example.com"]
    assert received.all("dispatched") == ["true"]


def test_ip_destination_is_verified_against_the_certificates_ip_address(
    trusting_sidecar: Sidecar, secure_upstream: Upstream
) -> None:
    response = trusting_sidecar.request("GET", "/", [("environment", "secure-ip")])
    assert response.status == 200
    assert response.json()["upstream"] == "secure"
    assert secure_upstream.last().all("Host") == [f"127.0.0.1:{secure_upstream.port}"]


def test_certificate_for_the_patched_host_but_not_the_destination_is_refused(
    trusting_sidecar: Sidecar, misnamed_upstream: Upstream
) -> None:
    response = trusting_sidecar.request("GET", "/", [("environment", "misnamed")])
    assert response.status == 502
    assert b"the destination failed (tls)" in response.body  # the client learns the kind ...
    assert misnamed_upstream.received == []
    # ... the log has why
    assert "Certificate verify failed: hostname mismatch" in trusting_sidecar.wait_for_log(
        "misnamed → "
    )


def test_destination_signed_by_an_unknown_ca_is_refused_with_a_502_and_the_log_saying_why(
    untrusting_sidecar: Sidecar, secure_upstream: Upstream
) -> None:
    served_before = len(secure_upstream.received)
    response = untrusting_sidecar.request("GET", "/x", [("environment", "secure")])
    # mitmproxy refuses during the handshake: the request itself is never sent upstream.
    assert response.status == 502
    # mitmproxy's own error page, made plain text without its message (error_pages.py)
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert b"the destination failed (tls)" in response.body
    assert UNKNOWN_CA not in response.body
    assert len(secure_upstream.received) == served_before
    logs = untrusting_sidecar.wait_for_log(f"secure → {https_url(secure_upstream)}/base failed:")
    assert UNKNOWN_CA.decode() in logs


def test_other_rules_keep_working_after_a_refusal(
    untrusting_sidecar: Sidecar, secure_upstream: Upstream
) -> None:
    served_before = len(secure_upstream.received)
    assert untrusting_sidecar.request("GET", "/", [("environment", "secure")]).status == 502
    dev = untrusting_sidecar.request("GET", "/", [("environment", "dev")])
    assert (dev.status, dev.json()["upstream"]) == (200, "dev")
    default = untrusting_sidecar.request("GET", "/")
    assert (default.status, default.json()["upstream"]) == (200, "default")
    # Refused again, not remembered as good.
    assert untrusting_sidecar.request("GET", "/", [("environment", "secure")]).status == 502
    assert len(secure_upstream.received) == served_before
