"""Routes end to end: real mitmdump and runner, real upstreams, every kind of match and action.

One config holds every route kind; each test sends what a client would and checks what the
upstreams received and what the client got back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar_dispatcher.testing.loopback import send

from .conftest import SaveConfig
from .processes import Sidecar, Upstream

ROUTES = """
key: environment
destination: {default}
rewrites:
  dev:
    patch: [{{key: dispatched, val: true}}]
    destination: {dev}
routes:
  - name: alice
    match: {{headers: {{x-user: alice}}}}
    destination: {a}
  - name: development
    match: {{headers: {{environment: {{one_of: [development, devel]}}}}}}
    destination: {dev}
  - name: tenants
    match:
      headers: {{x-tenant: {{prefix: "eu-"}}}}
      methods: [POST]
    destination: {a}
  - name: sessions
    match: {{headers: {{x-session: {{regex: "(a+)+$"}}}}}}
    destination: {a}
  - name: api
    match:
      path: {{prefix: /api/}}
      headers: {{x-debug: {{present: true}}}}
    destination: {a}/base
    remove: [Authorization]
    patch: [{{key: X-Env, val: debug}}]
    append: [{{key: Via, val: 1.1 sidecar}}]
    rewrite_path: {{prefix: /v2/}}
    response:
      patch: [{{key: X-Served-By, val: api}}]
      remove: [Server]
  - name: canary
    match: {{headers: {{x-canary: {{present: true}}}}}}
    split:
      - {{destination: {a}, weight: 90}}
      - {{destination: {b}, weight: 10}}
  - name: sticky
    match: {{headers: {{x-sticky: {{present: true}}}}}}
    split:
      - {{destination: {a}, weight: 1}}
      - {{destination: {b}, weight: 1}}
    sticky: x-user-id
"""

UNMATCHED = """
key: environment
unmatched: {{status: 404, body: "no route here\\n"}}
routes:
  - name: only
    match: {{path: {{exact: /only}}}}
    destination: {a}
"""


@pytest.fixture(scope="module")
def upstream_a() -> Iterator[Upstream]:
    with Upstream("a") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def upstream_b() -> Iterator[Upstream]:
    with Upstream("b") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def routed(  # noqa: PLR0917 - fixtures are taken by name
    save_config: SaveConfig,
    default_upstream: Upstream,
    dev_upstream: Upstream,
    upstream_a: Upstream,
    upstream_b: Upstream,
    engine: str,
) -> Iterator[Sidecar]:
    config = save_config(
        ROUTES.format(
            default=default_upstream.url, dev=dev_upstream.url, a=upstream_a.url, b=upstream_b.url
        )
    )
    # Head limits raised so that a 100 KB header value (the ReDoS case) reaches the routes.
    limits = ["dispatcher_max_header_line=131072", "dispatcher_max_request_head=262144"]
    env = {"SIDECAR_CONFIG": str(config)}
    with Sidecar(default_upstream.url, env=env, engine=engine, options=limits) as s:
        yield s


def served_by(
    sidecar: Sidecar, *headers: tuple[str, str], path: str = "/", method: str = "GET"
) -> str:
    response = send(
        sidecar.port, method, path, list(headers), body=b"" if method == "POST" else None
    )
    assert response.status == 200, response.body
    upstream: str = response.json()["upstream"]
    return upstream


@pytest.mark.parametrize(
    ("headers", "path", "method", "upstream"),
    [
        ((("X-User", "alice"),), "/", "GET", "a"),
        ((("x-user", "Alice"),), "/", "GET", "default"),
        ((("environment", "devel"),), "/", "GET", "dev"),
        ((("x-tenant", "eu-west"),), "/", "POST", "a"),
        ((("x-tenant", "eu-west"),), "/", "GET", "default"),
        ((("x-session", "aaaa"),), "/", "GET", "a"),
        ((("x-debug", "1"),), "/api/items", "GET", "a"),
        ((("x-debug", "1"),), "/web/items", "GET", "default"),
    ],
)
def test_each_kind_of_match(
    routed: Sidecar,
    headers: tuple[tuple[str, str], ...],
    path: str,
    method: str,
    upstream: str,
) -> None:
    assert served_by(routed, *headers, path=path, method=method) == upstream


def test_routes_come_first_then_rewrites_then_the_default(
    routed: Sidecar, dev_upstream: Upstream
) -> None:
    assert served_by(routed, ("x-user", "alice"), ("environment", "dev")) == "a"
    assert served_by(routed, ("environment", "dev")) == "dev"
    assert dev_upstream.last().all("dispatched") == ["true"]
    assert served_by(routed, ("environment", "prod")) == "default"


def test_request_and_response_headers_are_edited_and_the_path_rewritten(
    routed: Sidecar, upstream_a: Upstream
) -> None:
    response = send(
        routed.port,
        "GET",
        "/api/items?id=7",
        [("x-debug", "1"), ("Authorization", "Bearer t"), ("Via", "1.1 edge"), ("X-Env", "x")],
    )
    assert response.status == 200
    received = upstream_a.last()
    assert received.path == "/base/v2/items?id=7"
    assert received.all("Authorization") == []
    assert received.all("X-Env") == ["debug"]
    assert received.all("Via") == ["1.1 edge", "1.1 sidecar"]
    assert received.header("Host") == f"127.0.0.1:{upstream_a.port}"
    assert response.all("X-Served-By") == ["api"]
    assert response.all("Server") == []
    assert response.all("Upstream") == ["a"]  # the rest of the response untouched


def test_a_split_sends_about_its_share_to_each_member(routed: Sidecar) -> None:
    counts = Counter(served_by(routed, ("x-canary", "1")) for _ in range(300))
    assert set(counts) <= {"a", "b"}
    assert 240 <= counts["a"] <= 295  # 90 % of 300 is 270; loose: 300 random draws


def test_a_sticky_split_sends_each_value_to_one_member(routed: Sidecar) -> None:
    members = {}
    for user in range(40):
        seen = {served_by(routed, ("x-sticky", "1"), ("x-user-id", f"u{user}")) for _ in range(3)}
        assert len(seen) == 1, f"user u{user} went to {seen}"
        members[user] = seen.pop()
    assert set(members.values()) == {"a", "b"}  # 40 users over two halves


def test_a_huge_value_against_a_backtracking_shaped_regex_is_answered_at_once(
    routed: Sidecar,
) -> None:
    # (a+)+$ backtracks exponentially in Python's re on "aaaa…b"; RE2 is linear.
    started = time.monotonic()
    response = send(routed.port, "GET", "/", [("x-session", "a" * 100_000 + "b")], timeout=10)
    elapsed = time.monotonic() - started
    # Matched (no full match), sent to the default upstream, whose own parser refuses a header
    # line over 64 KiB: its answer, passed back, shows the request went through the routes.
    assert response.status == 431
    assert b"got more than 65536 bytes when reading header line" in response.body
    assert elapsed < 5, f"{elapsed:.1f} s: the regex backtracked"


def test_unmatched_is_answered_by_the_sidecar(
    save_config: SaveConfig, default_upstream: Upstream, upstream_a: Upstream, engine: str
) -> None:
    config = save_config(UNMATCHED.format(a=upstream_a.url))
    with Sidecar(default_upstream.url, env={"SIDECAR_CONFIG": str(config)}, engine=engine) as s:
        before = len(default_upstream.received) + len(upstream_a.received)
        response = s.request("GET", "/elsewhere")
        assert response.status == 404
        assert response.body == b"no route here\n"
        assert response.header("Content-Type") == "text/plain; charset=utf-8"
        assert len(default_upstream.received) + len(upstream_a.received) == before
        assert s.request("GET", "/only").json()["upstream"] == "a"
        s.wait_for_log("unmatched → none")


def test_every_seed_config_dispatches_as_before(config_file: Path, sidecar: Sidecar) -> None:
    # The shared seed-shaped config (tests/integration/conftest.py) has no routes.
    assert "routes" not in config_file.read_text()
    assert sidecar.request("GET", "/", [("environment", "dev")]).json()["upstream"] == "dev"
