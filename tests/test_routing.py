"""Routing: which rule a request selects, and every header the upstream request gets."""

from __future__ import annotations

import pytest

from sidecar_dispatcher.config.destinations import parse_destination
from sidecar_dispatcher.config.load import parse_config
from sidecar_dispatcher.core.decision import Decision
from sidecar_dispatcher.core.header_edits import HeaderList
from sidecar_dispatcher.core.model import HeaderPatch
from sidecar_dispatcher.core.resolve import AmbiguousRequest, forwarded_for, resolve
from sidecar_dispatcher.testing.configs import dispatch_config

# dev: Host and dispatched patched, to dev.test:8080/base; qa: dispatched, to the default
RULES = parse_config(
    dispatch_config("http://default.test", dev="http://dev.test:8080/base"), "routing.yaml"
)


def decide(
    *fields: tuple[str, str],
    path: str = "/",
    keep_host: bool = False,
    client_ip: str | None = "10.0.0.7",
) -> Decision:
    return resolve(RULES, HeaderList(fields), client_ip=client_ip, path=path, keep_host=keep_host)


def test_no_key_header_goes_to_default_with_nothing_patched() -> None:
    decision = decide()
    assert decision.rule is None
    assert decision.reason == "no environment header"
    assert decision.destination == RULES.default
    assert decision.headers == (
        HeaderPatch("Host", "default.test"),
        HeaderPatch("X-Forwarded-For", "10.0.0.7"),
    )


def test_value_without_rule_goes_to_default() -> None:
    decision = decide(("environment", "prod"))
    assert decision.rule is None
    assert decision.reason == "no rule for environment: prod"
    assert not decision.dispatched


def test_key_header_name_matches_case_insensitively() -> None:
    assert decide(("ENVIRONMENT", "dev")).rule == "dev"


def test_key_value_matches_case_sensitively() -> None:
    assert decide(("environment", "DEV")).rule is None


def test_key_value_surrounding_whitespace_is_ignored() -> None:
    assert decide(("environment", "  dev\t")).rule == "dev"


def test_repeated_identical_key_headers_select_the_rule() -> None:
    assert decide(("environment", "dev"), ("Environment", "dev ")).rule == "dev"


def test_conflicting_key_headers_are_refused() -> None:
    with pytest.raises(AmbiguousRequest, match="conflicting environment headers: 'dev', 'qa'"):
        decide(("environment", "dev"), ("environment", "qa"))


def test_rule_destination_and_patches_apply_after_host() -> None:
    decision = decide(("environment", "dev"), path="/x?q=1")
    assert decision.rule == "dev"
    assert str(decision.destination) == "http://dev.test:8080/base"
    assert decision.path == "/base/x?q=1"
    assert decision.headers == (
        HeaderPatch("Host", "dev.test:8080"),
        HeaderPatch("X-Forwarded-For", "10.0.0.7"),
        HeaderPatch("Host", "example.com"),
        HeaderPatch("dispatched", "true"),
    )
    assert decision.patched_names == ("Host", "X-Forwarded-For", "dispatched")


def test_rule_without_destination_uses_default_and_still_patches() -> None:
    decision = decide(("environment", "qa"))
    assert decision.dispatched
    assert decision.destination == RULES.default
    assert HeaderPatch("dispatched", "true") in decision.headers


def test_keep_host_leaves_host_alone_unless_patched() -> None:
    assert "Host" not in decide(keep_host=True).patched_names
    assert (
        HeaderPatch("Host", "example.com") in decide(("environment", "dev"), keep_host=True).headers
    )


def test_forwarded_for_is_created_then_appended() -> None:
    assert forwarded_for(HeaderList(), "10.0.0.7") == "10.0.0.7"
    existing = HeaderList([("X-Forwarded-For", "1.1.1.1, 2.2.2.2"), ("x-forwarded-for", "3.3.3.3")])
    assert forwarded_for(existing, "10.0.0.7") == "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.7"


def test_forwarded_for_unmaps_ipv4_clients_of_dual_stack_sockets() -> None:
    assert forwarded_for(HeaderList(), "::ffff:192.0.2.1") == "192.0.2.1"
    assert forwarded_for(HeaderList(), "::1") == "::1"


def test_without_client_address_forwarded_for_is_untouched() -> None:
    assert "X-Forwarded-For" not in decide(client_ip=None).patched_names


def test_decision_describes_itself_for_mitmweb() -> None:
    dev = decide(("environment", "dev"))
    assert dev.describe() == "dev → http://dev.test:8080/base"
    assert decide().describe() == "default → http://default.test"
    assert dev.as_metadata() == {
        "rule": "dev",
        "reason": "environment: dev",
        "destination": "http://dev.test:8080/base",
        "path": "/base/",
        "headers_set": {"Host": "example.com", "X-Forwarded-For": "10.0.0.7", "dispatched": "true"},
        "label": "dev",
        "patched": ["Host", "X-Forwarded-For", "dispatched"],
        "response_headers": [],
        "timeout": None,
        "mirror": None,
        "answer": None,
    }


@pytest.mark.parametrize(
    ("destination", "path", "upstream"),
    [
        ("http://h:8080/base", "/x?q=1", "/base/x?q=1"),
        ("http://h:8080/base/", "/x", "/base/x"),
        ("http://h/base", "/", "/base/"),
        ("http://h", "/x?q=1", "/x?q=1"),
        ("http://h/", "/x", "/x"),
        ("http://h/base", "*", "*"),
    ],
)
def test_base_path_prefixes_the_request_path(destination: str, path: str, upstream: str) -> None:
    assert parse_destination(destination).upstream_path(path) == upstream


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("http://h", "h"),
        ("http://h:80", "h"),
        ("https://h:443", "h"),
        ("http://h:443", "h:443"),
        ("https://h:8443/x", "h:8443"),
        ("http://[::1]:8080", "[::1]:8080"),
        ("http://bücher.test", "xn--bcher-kva.test"),
    ],
)
def test_destination_authority_is_the_host_header(url: str, authority: str) -> None:
    assert parse_destination(url).authority == authority


@pytest.mark.parametrize("value", [" dev", "dev\t", " \tdev  "])
def test_spaces_and_tabs_around_the_key_value_are_not_part_of_it(value: str) -> None:
    assert decide(("environment", value)).rule == "dev"


@pytest.mark.parametrize("value", ["\u00a0dev", "\u3000dev", "\x1cdev", "dev\u2028"])
def test_other_whitespace_makes_a_different_value(value: str) -> None:
    # str.strip() would remove these; a front proxy that checked the value exactly did not.
    decision = decide(("environment", value))
    assert decision.rule is None
    assert "dispatched" not in decision.patched_names
