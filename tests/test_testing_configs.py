"""sidecar_dispatcher.testing.configs writes the configs its docstrings describe, and they load."""

from __future__ import annotations

from sidecar_dispatcher.config.load import parse_config
from sidecar_dispatcher.core.model import Destination, HeaderPatch, RuleSet
from sidecar_dispatcher.testing.configs import Rewrite, config_text, dispatch_config


def load(text: str) -> RuleSet:
    return parse_config(text, "generated.yaml")


def test_seed_config_has_dev_and_qa_and_token_and_down_only_when_given() -> None:
    assert set(load(dispatch_config("http://default.test")).rewrites) == {"dev", "qa"}
    grown = dispatch_config(
        "http://default.test", token="https://secure.test", down="http://x.test"
    )
    assert set(load(grown).rewrites) == {"dev", "qa", "token", "down"}


def test_seed_config_rules_patch_and_route_as_documented() -> None:
    rules = load(
        dispatch_config(
            "http://default.test:8081",
            dev="http://dev.test:8082/base",
            token="https://secure.test",
            down="http://127.0.0.1:9",
        )
    )
    assert rules.key == "environment"
    assert rules.default == Destination("http", "default.test", 8081)
    dev, qa, token, down = (rules.rewrites[name] for name in ("dev", "qa", "token", "down"))
    assert dev.destination == Destination("http", "dev.test", 8082, "/base")
    assert dev.patches == (HeaderPatch("Host", "example.com"), HeaderPatch("dispatched", "true"))
    assert qa.destination is None  # no qa= given: the default destination
    assert qa.patches == (HeaderPatch("dispatched", "true"),)
    assert token.destination == Destination("https", "secure.test", 443)
    assert [patch.name for patch in token.patches] == ["Authorization", "X-Twice", "x-twice"]
    assert down.destination == Destination("http", "127.0.0.1", 9)


def test_a_rule_with_neither_patches_nor_destination_is_written_as_an_empty_mapping() -> None:
    text = config_text(
        "http://default.test", {"bare": Rewrite(), "only-to": Rewrite((), "http://b.test")}
    )
    assert "  bare: {}\n" in text
    rules = load(text)
    assert rules.rewrites["bare"].patches == ()
    assert rules.rewrites["bare"].destination is None
    assert rules.rewrites["only-to"].destination == Destination("http", "b.test", 80)
