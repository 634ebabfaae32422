"""The config loader: the original schema, and a precise error for every kind of bad file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sidecar_dispatcher.config.load import (
    MAX_CONFIG_BYTES,
    ConfigError,
    load_config,
    parse_config,
)
from sidecar_dispatcher.core.model import Destination, HeaderPatch, RuleSet
from sidecar_dispatcher.testing.configs import Rewrite, config_text

from .conftest import WriteConfig

ORIGINAL = """
rewrites: # set of rewrite rules
  dev: # value of key propery. i.e -H 'environment: dev'
    patch: # action type
      - key: Host # header key
        val: example.com # header value
      - key: dispatched
        val: true
    destination: http://example.com # (optional) destination url
key: environment # key used to dispatch request
destination: http://example.org # default destination url
"""


def parse(text: str) -> RuleSet:
    return parse_config(textwrap.dedent(text).lstrip("\n"), "test.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(text)
    return [str(problem) for problem in raised.value.problems]


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- the original schema


def test_original_readme_example_loads_unchanged(write_config: WriteConfig) -> None:
    rules = load_config(write_config(ORIGINAL))
    assert rules.key == "environment"
    assert rules.default == Destination("http", "example.org", 80)
    dev = rules.rewrites["dev"]
    assert dev.destination == Destination("http", "example.com", 80)
    assert dev.patches == (HeaderPatch("Host", "example.com"), HeaderPatch("dispatched", "true"))


def test_repository_config_yaml_is_valid() -> None:
    rules = load_config(Path(__file__).parents[1] / "config.yaml")
    assert rules.key == "environment"
    assert set(rules.rewrites) == {"dev", "qa"}


def test_rule_without_destination_has_none_and_keeps_its_patches() -> None:
    qa = Rewrite(patch=[("dispatched", "yes-please")])
    rules = parse(config_text("http://default.test", {"qa": qa}))
    assert rules.rewrites["qa"].destination is None
    assert rules.rewrites["qa"].patches == (HeaderPatch("dispatched", "yes-please"),)


def test_rewrites_may_be_missing_or_empty() -> None:
    assert parse("key: env\ndestination: http://a.test\n").rewrites == {}
    assert parse("key: env\ndestination: http://a.test\nrewrites:\n").rewrites == {}


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("true", "true"),
        ("True", "true"),
        ("FALSE", "false"),
        ("yes", "yes"),  # YAML 1.1 calls it a boolean; the user wrote "yes"
        ("1.50", "1.50"),
        ("007", "007"),
        ("0x1F", "0x1F"),
        ("1e3", "1e3"),
        ("2024-01-02", "2024-01-02"),
        ("'true'", "true"),
        ('"quoted value"', "quoted value"),
        ('""', ""),
        ("tab\there", "tab\there"),
    ],
)
def test_patch_values_are_sent_as_written(written: str, sent: str) -> None:
    dev = Rewrite(patch=[("X-Value", written)])
    rules = parse(config_text("http://default.test", {"dev": dev}))
    assert rules.rewrites["dev"].patches == (HeaderPatch("X-Value", sent),)


def test_rule_names_are_taken_as_written() -> None:
    rules = parse("""
        key: environment
        destination: http://default.test
        rewrites:
          1: {}
          true: {}
          "02": {}
    """)
    assert set(rules.rewrites) == {"1", "true", "02"}


def test_destination_with_port_and_base_path() -> None:
    rules = parse("key: env\ndestination: https://Api.Example.test:8443/base/\n")
    assert rules.default == Destination("https", "api.example.test", 8443, "/base")


# --- bad files: each names file:line:col, the key path and what was expected
#
# A bad file and its message belong in the catalogue, tests/fixtures/bad-configs (see
# tests/bad_configs.py), where test_schema.py checks the loader and the JSON Schema against each.
# Here: what a fixture file cannot be or the schema cannot judge, and what needs more than the
# messages' text.


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}:1:1: config file not found")):
        load_config(path)


def test_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a config file, found a directory"):
        load_config(tmp_path)


def test_unreadable_path_is_reported(write_config: WriteConfig) -> None:
    below_a_file = write_config(ORIGINAL) / "config.yaml"
    with pytest.raises(ConfigError, match="cannot read config file: Not a directory"):
        load_config(below_a_file)


def test_non_utf8_file_names_the_offending_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"key: environment\ndestination: http://caf\xe9.test\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:2:24: config file is not valid UTF-8"):
        load_config(path)


def test_oversized_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_config(path)


def test_empty_file_is_an_error() -> None:
    # zero bytes: the catalogue's empty.yaml holds its expectation, a comment
    assert "config is empty" in only_problem("")


def test_block_scalar_with_trailing_newline_is_refused() -> None:
    # Not in the catalogue: the schema's value pattern ends in `$`, which in Python's `re` (so in
    # jsonschema) also matches before a final newline; editors' ECMAScript regexes refuse it.
    message = only_problem("""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch:
              - key: X-Token
                val: |
                  secret
    """)
    assert "rewrites.dev.patch[0].val: header value contains a line feed" in message


def test_unsupported_yaml_tags_and_merge_keys_are_refused() -> None:
    # Not in the catalogue: an editor merges a merge key and its schema check passes; only the
    # loader refuses it.
    found = problems("""
        key: environment
        destination: !!binary aGVsbG8=
        rewrites:
          base: &base {destination: http://b.test}
          dev:
            <<: *base
    """)
    assert any(
        "destination: expected an http:// or https:// URL, got a value tagged" in p for p in found
    )
    assert any("merge keys (<<) are not supported" in p for p in found)


def test_every_problem_is_reported_not_just_the_first() -> None:
    found = problems("""
        key: bad key
        destination: nowhere
        rewrites:
          dev:
            patch:
              - {key: Host, val: "a\\nb"}
            destnation: http://x.test
    """)
    assert len(found) == 4
    assert [p.split(": ")[1] for p in found] == [
        "key",
        "destination",
        "rewrites.dev.patch[0].val",
        "rewrites.dev.destnation",
    ]


def test_alias_bomb_is_bounded() -> None:
    # Aliases are shared nodes, never expanded: a "billion laughs" file is read at once.
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = (
        "\n".join(
            [
                "key: environment",
                "destination: http://a.test",
                "rewrites:",
                "  dev:",
                "    patch: *a9",
                *lines,
            ]
        )
        + "\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "bomb.yaml")
    assert len(raised.value.problems) <= 20
