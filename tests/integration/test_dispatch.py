"""End to end: a real mitmdump with the addon, real upstream servers, a real HTTP client."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from sidecar_dispatcher.testing.loopback import send

from .processes import Sidecar, Upstream, binary_payload


def test_request_without_key_goes_to_default_unpatched(
    sidecar: Sidecar, default_upstream: Upstream
) -> None:
    response = sidecar.request("GET", "/plain?x=1")
    assert response.status == 200
    echoed = response.json()
    assert echoed["upstream"] == "default"
    assert echoed["path"] == "/plain?x=1"
    received = default_upstream.last()
    assert received.header("Host") == f"127.0.0.1:{default_upstream.port}"
    assert received.header("dispatched") is None
    assert received.all("X-Forwarded-For") == ["127.0.0.1"]


def test_dev_request_goes_to_its_destination_with_patches(
    sidecar: Sidecar, dev_upstream: Upstream
) -> None:
    response = sidecar.request("GET", "/x?q=1", [("environment", "dev")])
    assert response.json()["upstream"] == "dev"
    received = dev_upstream.last()
    assert received.path == "/base/x?q=1"  # the destination's base path is prefixed
    assert received.all("Host") == ["example.com"]
    assert received.all("dispatched") == ["true"]
    assert received.all("environment") == ["dev"]


def test_rule_without_destination_patches_and_goes_to_default(
    sidecar: Sidecar, default_upstream: Upstream
) -> None:
    assert sidecar.request("GET", "/", [("environment", "qa")]).json()["upstream"] == "default"
    assert default_upstream.last().all("dispatched") == ["true"]


def test_value_without_rule_goes_to_default_unpatched(
    sidecar: Sidecar, default_upstream: Upstream
) -> None:
    assert sidecar.request("GET", "/", [("environment", "prod")]).json()["upstream"] == "default"
    assert default_upstream.last().header("dispatched") is None


def test_key_name_is_case_insensitive_and_value_case_sensitive(sidecar: Sidecar) -> None:
    assert sidecar.request("GET", "/", [("ENVIRONMENT", "dev")]).json()["upstream"] == "dev"
    assert sidecar.request("GET", "/", [("environment", "Dev")]).json()["upstream"] == "default"
    assert sidecar.request("GET", "/", [("environment", " dev ")]).json()["upstream"] == "dev"


def test_forwarded_for_is_appended(sidecar: Sidecar, dev_upstream: Upstream) -> None:
    sidecar.request("GET", "/", [("environment", "dev"), ("X-Forwarded-For", "203.0.113.5")])
    assert dev_upstream.last().all("X-Forwarded-For") == ["203.0.113.5, 127.0.0.1"]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_query_cookies_and_binary_bodies_pass_intact(
    sidecar: Sidecar, dev_upstream: Upstream, method: str
) -> None:
    body = binary_payload(300_000) if method in ("POST", "PUT", "PATCH") else None
    headers = [("environment", "dev"), ("Cookie", "session=abc; theme=dark")]
    response = sidecar.request(method, "/api/items?id=7&tag=a%20b", headers, body)
    assert response.status == 200
    received = dev_upstream.last()
    assert received.method == method
    assert received.path == "/base/api/items?id=7&tag=a%20b"
    assert received.all("Cookie") == ["session=abc; theme=dark"]
    assert received.body == (body or b"")
    assert response.json()["body_sha256"] == hashlib.sha256(body or b"").hexdigest()


def test_response_status_headers_and_body_pass_intact(sidecar: Sidecar) -> None:
    response = sidecar.request("GET", "/status/418", [("environment", "dev")])
    assert response.status == 418
    assert response.all("X-Upstream-Header") == ["kept"]
    assert response.all("Set-Cookie") == ["a=1", "b=2"]
    assert response.body == b"status 418 from dev"
    binary = sidecar.request("GET", "/bytes/200000", [("environment", "dev")])
    assert binary.body == binary_payload(200_000, seed=3)


def test_destination_down_gives_502_and_other_rules_keep_working(sidecar: Sidecar) -> None:
    down = sidecar.request("GET", "/", [("environment", "down")])
    assert down.status == 502
    assert sidecar.request("GET", "/", [("environment", "dev")]).json()["upstream"] == "dev"
    assert sidecar.request("GET", "/").json()["upstream"] == "default"
    sidecar.wait_for_log("down → http://127.0.0.1:")
    assert "failed:" in sidecar.logs()


def test_conflicting_key_headers_get_an_explicit_400(
    sidecar: Sidecar, default_upstream: Upstream, dev_upstream: Upstream
) -> None:
    before = len(default_upstream.received) + len(dev_upstream.received)
    response = sidecar.request("GET", "/", [("environment", "dev"), ("environment", "qa")])
    assert response.status == 400
    assert b"conflicting environment headers" in response.body
    assert len(default_upstream.received) + len(dev_upstream.received) == before


def test_one_info_line_per_request_without_header_values(sidecar: Sidecar) -> None:
    sidecar.request("GET", "/logged/path?secret-query=1", [("environment", "token")])
    logs = sidecar.wait_for_log("token → ")
    (line,) = [line for line in logs.splitlines() if "token → " in line]
    # the terminal log's format, whether through logging (mitmdump) or written directly (runner)
    assert re.match(r"\[\d\d:\d\d:\d\d\.\d\d\d\] token → http://127\.0\.0\.1:\d+ ", line), line
    assert (
        "(environment: token) GET /logged/path "
        "patched=[Host, X-Forwarded-For, Authorization, X-Twice, x-twice]"
    ) in line
    assert re.search(r"\] 200 \d+\.\dms$", line), line  # written when the answer is complete
    assert "s3cret" not in logs


# --- the same sidecar with other mitmproxy options


def configured(
    config_file: Path,
    default_upstream: Upstream,
    engine: str,
    *options: str,
    env: Mapping[str, str] | None = None,
) -> Sidecar:
    """The sidecar with its config through --set, these options and this environment."""
    return Sidecar(
        default_upstream.url, config=config_file, options=options, env=env, engine=engine
    )


@pytest.fixture(scope="module")
def streaming_sidecar(
    config_file: Path, default_upstream: Upstream, engine: str
) -> Iterator[Sidecar]:
    """Request bodies above 1 KiB streamed."""
    with configured(config_file, default_upstream, engine, "stream_large_bodies=1k") as process:
        yield process


def test_streamed_upload_goes_to_its_keys_destination(
    streaming_sidecar: Sidecar, dev_upstream: Upstream
) -> None:
    body = binary_payload(2_000_000)
    response = streaming_sidecar.request("POST", "/upload", [("environment", "dev")], body)
    assert response.status == 200
    assert response.json()["upstream"] == "dev"
    assert dev_upstream.last().path == "/base/upload"
    assert dev_upstream.last().body == body
    assert dev_upstream.last().all("Host") == ["example.com"]


def test_streamed_download_passes_intact(streaming_sidecar: Sidecar) -> None:
    response = streaming_sidecar.request("GET", "/bytes/3000000", [("environment", "dev")])
    assert response.body == binary_payload(3_000_000, seed=3)


def test_keep_host_header_keeps_the_clients_host(
    config_file: Path, default_upstream: Upstream, dev_upstream: Upstream, engine: str
) -> None:
    with configured(config_file, default_upstream, engine, "keep_host_header=true") as process:
        process.request("GET", "/", [("Host", "app.client.test")])
        assert default_upstream.last().all("Host") == ["app.client.test"]
        process.request("GET", "/", [("Host", "app.client.test"), ("environment", "dev")])
        assert dev_upstream.last().all("Host") == ["example.com"]  # the patch still wins


def test_reverse_target_down_does_not_fail_dispatched_requests(
    config_file: Path, dev_upstream: Upstream, closed_port: int
) -> None:
    with Sidecar(f"http://127.0.0.1:{closed_port}", config=config_file) as process:
        response = process.request("GET", "/", [("environment", "dev")])
        assert response.status == 200
        assert response.json()["upstream"] == "dev"
        assert "connection_strategy set to lazy" in process.logs()
        assert "is not the config's default destination" in process.logs()


def test_debug_level_logs_header_values(
    config_file: Path, default_upstream: Upstream, engine: str
) -> None:
    debug = {"SIDECAR_LOGGING_LEVEL": "DEBUG"}
    with configured(config_file, default_upstream, engine, env=debug) as process:
        process.request("GET", "/", [("environment", "token")])
        process.wait_for_log("token → set Authorization: Bearer s3cret")


def test_warning_level_hides_the_per_request_line(
    config_file: Path, default_upstream: Upstream, engine: str
) -> None:
    warning = {"SIDECAR_LOGGING_LEVEL": "WARNING"}
    with configured(config_file, default_upstream, engine, env=warning) as process:
        assert process.request("GET", "/", [("environment", "dev")]).status == 200
        assert send(process.port, "GET", "/", [("environment", "down")]).status == 502
        process.wait_for_log("down → ")  # the WARNING for the failed destination
        assert "dev → " not in process.logs()
