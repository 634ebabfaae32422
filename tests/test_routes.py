"""Routes: matching on headers, path and method, order, split, header edits, unmatched."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sidecar_dispatcher.config.load import ConfigError, parse_config
from sidecar_dispatcher.core.decision import Decision
from sidecar_dispatcher.core.header_edits import HeaderList
from sidecar_dispatcher.core.model import (
    HeaderAppend,
    HeaderPatch,
    HeaderRemoval,
    RuleSet,
    Unmatched,
)
from sidecar_dispatcher.core.resolve import resolve

CONFIG = """
key: environment
destination: http://default.test
rewrites:
  dev:
    patch: [{key: dispatched, val: true}]
    destination: http://dev.test
routes:
  - name: alice
    match:
      headers: {x-user: alice}
    destination: http://alice.test
  - name: development
    match:
      headers:
        environment: {one_of: [development, devel]}
    destination: http://dev.test
  - name: eu
    match:
      headers: {X-Tenant: {prefix: "eu-"}}
      methods: [GET, post]
    destination: http://eu.test
  - name: session
    match:
      headers:
        x-session: {regex: "^[a-f0-9]{8}$"}
    destination: http://session.test
  - name: debug
    match:
      headers: {x-debug: {present: true}}
      path: {prefix: /api/}
    destination: http://debug.test:8080/base
    remove: [Authorization]
    patch: [{key: X-Env, val: debug}]
    append: [{key: Via, val: sidecar}]
    rewrite_path: {prefix: /v2/}
    response:
      patch: [{key: X-Served-By, val: debug}]
      remove: [Server]
    timeout: 2.5
  - name: versioned
    match:
      path: {regex: "^/v[0-9]+/"}
    destination: http://versioned.test
  - name: health
    match:
      path: {exact: /health}
      headers: {x-probe: {present: false}}
    destination: http://health.test
"""

RULES = parse_config(CONFIG, "routes.yaml")


def decide(
    *fields: tuple[str, str],
    path: str = "/",
    method: str = "GET",
    rules: RuleSet = RULES,
    chooser: float = 0.5,
) -> Decision:
    return resolve(
        rules,
        HeaderList(fields),
        client_ip="10.0.0.7",
        path=path,
        keep_host=False,
        method=method,
        chooser=lambda: chooser,
    )


def test_routes_are_read_in_order_with_their_names() -> None:
    assert [route.name for route in RULES.routes] == [
        "alice",
        "development",
        "eu",
        "session",
        "debug",
        "versioned",
        "health",
    ]
    assert RULES.rule_count == 8


@pytest.mark.parametrize(
    ("fields", "path", "method", "rule"),
    [
        ((("X-User", "alice"),), "/", "GET", "alice"),  # header names in any case
        ((("x-user", "alice "),), "/", "GET", "alice"),  # surrounding spaces are not the value
        ((("x-user", "Alice"),), "/", "GET", None),  # values are case-sensitive
        ((("environment", "devel"),), "/", "GET", "development"),
        ((("environment", "dev"),), "/", "GET", "dev"),  # no route: the rewrite
        ((("x-tenant", "eu-west"),), "/", "POST", "eu"),
        ((("x-tenant", "eu-west"),), "/", "DELETE", None),  # method not listed
        ((("x-tenant", "us-east"),), "/", "GET", None),
        ((("x-session", "deadbeef"),), "/", "GET", "session"),
        ((("x-session", "deadbeef0"),), "/", "GET", None),  # full match
        ((("x-debug", ""),), "/api/items", "GET", "debug"),  # present, even empty
        ((("x-debug", "1"),), "/web/items", "GET", None),
        ((), "/v2/items?x=1", "GET", "versioned"),  # the path regex is searched, no query
        ((), "/health", "GET", "health"),
        ((("x-probe", "1"),), "/health", "GET", None),  # present: false
        ((), "/health/", "GET", None),
    ],
)
def test_each_matcher(
    fields: tuple[tuple[str, str], ...], path: str, method: str, rule: str | None
) -> None:
    assert decide(*fields, path=path, method=method).rule == rule


def test_the_first_matching_route_wins_and_routes_come_before_rewrites() -> None:
    both = decide(("x-user", "alice"), ("environment", "dev"))
    assert both.rule == "alice"
    assert both.reason == "route alice matched"
    assert "dispatched" not in both.patched_names


def test_repeated_headers_are_matched_as_one_combined_value() -> None:
    assert decide(("x-user", "alice"), ("x-user", "bob")).rule is None  # "alice, bob"


def test_route_edits_come_after_host_and_forwarded_for_in_order() -> None:
    decision = decide(("x-debug", "1"), path="/api/items?q=1")
    assert decision.headers == (
        HeaderPatch("Host", "debug.test:8080"),
        HeaderPatch("X-Forwarded-For", "10.0.0.7"),
        HeaderRemoval("Authorization"),
        HeaderPatch("X-Env", "debug"),
        HeaderAppend("Via", "sidecar"),
    )
    assert decision.patched_names == ("Host", "X-Forwarded-For", "-Authorization", "X-Env", "+Via")
    assert decision.path == "/base/v2/items?q=1"  # the prefix replaced, then the base path
    assert decision.response_headers == (
        HeaderRemoval("Server"),
        HeaderPatch("X-Served-By", "debug"),
    )
    assert decision.timeout == 2.5


def test_edits_apply_to_a_header_list_as_mitmproxy_would() -> None:
    headers = HeaderList(
        [("x-debug", "1"), ("Authorization", "Bearer t"), ("Via", "1.1 edge"), ("X-Env", "a")]
    )
    headers.apply(decide(("x-debug", "1"), path="/api/x").headers)
    assert headers.fields == [
        ("x-debug", "1"),
        ("Via", "1.1 edge"),
        ("X-Env", "debug"),
        ("Host", "debug.test:8080"),
        ("X-Forwarded-For", "10.0.0.7"),
        ("Via", "sidecar"),
    ]


SPLIT = """
key: environment
destination: http://default.test
routes:
  - name: sticky
    match: {headers: {x-sticky: {present: true}}}
    split:
      - {destination: http://a.test, weight: 3}
      - {destination: http://b.test, weight: 1}
    sticky: x-user
  - name: canary
    split:
      - {destination: http://stable.test, weight: 90}
      - {destination: http://canary.test, weight: 10}
"""


def test_a_split_follows_its_weights() -> None:
    rules = parse_config(SPLIT, "split.yaml")
    rng = random.Random(7)
    counts = Counter(
        str(decide(rules=rules, chooser=rng.random()).destination) for _ in range(1000)
    )
    assert 860 <= counts["http://stable.test"] <= 940  # 90 % ± 4 %
    assert counts["http://stable.test"] + counts["http://canary.test"] == 1000


def test_a_sticky_split_sends_a_value_to_one_member_and_keeps_the_shares() -> None:
    rules = parse_config(SPLIT, "split.yaml")
    firsts = {}
    for user in range(1000):
        fields = (("x-sticky", "1"), ("x-user", f"user-{user}"))
        seen = {str(decide(*fields, rules=rules, chooser=c).destination) for c in (0.0, 0.99)}
        assert len(seen) == 1  # the same member whatever the random draw
        firsts[user] = seen.pop()
    share = Counter(firsts.values())["http://a.test"] / 1000
    assert 0.71 <= share <= 0.79  # 3 of 4 ± 4 %
    reason = decide(("x-sticky", "1"), ("x-user", "u"), rules=rules).reason
    assert reason.startswith("route sticky matched, split member ")
    assert reason.endswith("(sticky on x-user)")


def test_unmatched_answers_instead_of_the_default() -> None:
    rules = parse_config(
        'key: environment\nunmatched: {status: 421, body: "no route\\n"}\n'
        "rewrites: {dev: {destination: http://dev.test}}\n",
        "unmatched.yaml",
    )
    assert rules.default is None
    decision = decide(("environment", "prod"), rules=rules)
    assert decision.answer == Unmatched(421, "no route\n")
    assert decision.destination is None
    assert decision.label == "unmatched"
    assert decide(("environment", "dev"), rules=rules).destination is not None


def test_a_mirror_takes_its_percentage_of_requests() -> None:
    rules = parse_config(
        "key: e\ndestination: http://a.test\nroutes:\n"
        "  - {name: m, mirror: {destination: http://shadow.test, percent: 25}}\n",
        "mirror.yaml",
    )
    assert str(decide(rules=rules, chooser=0.2).mirror) == "http://shadow.test"
    assert decide(rules=rules, chooser=0.3).mirror is None


def test_the_seed_config_has_no_routes_and_keeps_its_meaning() -> None:
    seed = parse_config(
        "key: environment\ndestination: http://example.org\n"
        "rewrites: {dev: {patch: [{key: Host, val: example.com}]}}\n"
    )
    assert seed.routes == () and seed.unmatched is None
    assert decide(("environment", "dev"), rules=seed).rule == "dev"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: [{match: {}}]", "routes[0].name: missing required key 'name'"),
        (
            "routes: [{name: a}, {name: a}]",
            "routes[1].name: route name 'a' is already used on line",
        ),
        ("rewrites: {a: {}}\nroutes: [{name: a}]", "route name 'a' is also a rule in rewrites"),
        (
            "routes: [{name: a, match: {headers: {x: {regex: '(?<=a)b'}}}}]",
            "routes[0].match.headers.x.regex: '(?<=a)b' is not an RE2 regular expression",
        ),
        (
            "routes: [{name: a, match: {headers: {x: {prefix: a, regex: b}}}}]",
            "routes[0].match.headers.x: expected exactly one of one_of, prefix, regex, present",
        ),
        (
            "routes: [{name: a, match: {headers: {X: a, x: b}}}]",
            "header 'x' is matched twice",
        ),
        (
            "routes: [{name: a, match: {path: {prefix: api}}}]",
            "routes[0].match.path.prefix: a path starts with '/'",
        ),
        (
            "routes: [{name: a, destination: http://b,"
            " split: [{destination: http://c, weight: 1}]}]",
            "give destination or split, not both",
        ),
        (
            "routes: [{name: a, split: [{destination: http://c, weight: 0}]}]",
            "routes[0].split[0].weight: expected a whole number from 1 to 1000000",
        ),
        ("routes: [{name: a, sticky: x-user}]", "routes[0].sticky: sticky needs a split"),
        (
            "routes: [{name: a, rewrite_path: {prefix: /v2/}}]",
            "rewrite_path replaces the prefix that match.path.prefix matched",
        ),
        ("routes: [{name: a, remove: [Host]}]", "routes[0].remove[0]: Host cannot be removed"),
        (
            "routes: [{name: a, timeout: 0}]",
            "routes[0].timeout: expected a number more than 0 and at most 3600",
        ),
        (
            "routes: [{name: a, mirror: {destination: http://m, percent: 150}}]",
            "routes[0].mirror.percent: expected a number more than 0 and at most 100",
        ),
        ("routes: [{name: a, destnation: http://b}]", "did you mean 'destination'?"),
        (
            "routes: [{name: a, append: [{key: host, val: b}]}]",
            "routes[0].append[0].key: Host cannot be appended to",
        ),
        (
            "routes: [{name: a, match: {headers: {x-user: ' alice'}}}]",
            "has surrounding spaces or tabs, which no request value keeps",
        ),
        (
            "routes: [{name: a, match: {headers: {x: {one_of: [a, 'b ']}}}}]",
            "routes[0].match.headers.x.one_of[1]: 'b ' has surrounding spaces",
        ),
        ("unmatched: {status: 204, body: gone}", "unmatched.body: a 204 response has no body"),
    ],
)
def test_bad_routes_are_refused_with_their_place(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(f"key: environment\ndestination: http://d.test\n{text}\n", "bad.yaml")
    assert message in str(refused.value)
    assert str(refused.value).startswith("bad.yaml:")


def test_without_a_default_every_rule_needs_a_destination() -> None:
    with pytest.raises(ConfigError, match=r"rewrites\.dev: needs a destination"):
        parse_config("key: e\nunmatched: {status: 404}\nrewrites: {dev: {}}\n", "u.yaml")
    with pytest.raises(ConfigError, match="missing required key 'destination'"):
        parse_config("key: e\nrewrites: {dev: {}}\n", "u.yaml")


def test_present_takes_every_yaml_boolean_spelling() -> None:
    rules = parse_config(
        "key: e\ndestination: http://d.test\nroutes:\n"
        "  - {name: a, match: {headers: {x-a: {present: yes}}}}\n"
        "  - {name: b, match: {headers: {x-b: {present: off}}}}\n",
        "yaml11.yaml",
    )
    assert decide(("x-a", "1"), rules=rules).rule == "a"
    assert decide(("x-b", "1"), rules=rules).rule is None  # b wants x-b absent


def test_numbers_are_read_as_yaml_reads_them() -> None:
    rules = parse_config(
        "key: e\ndestination: http://d.test\nroutes:\n  - {name: a, timeout: 010}\n", "n.yaml"
    )
    assert rules.routes[0].timeout == 8.0  # YAML 1.1 octal, as the schema and editors read it


def test_aliases_cannot_multiply_route_items_without_bound() -> None:
    headers = "{" + ", ".join(f"x-h{n}: v" for n in range(300)) + "}"
    routes = "\n".join(f"  - {{name: r{n}, match: {{headers: *h}}}}" for n in range(200))
    text = f"key: e\ndestination: http://d.test\nanchor: &h {headers}\nroutes:\n{routes}\n"
    with pytest.raises(ConfigError, match="more than 50000 route conditions"):
        parse_config(text, "bomb.yaml")
