"""The config loader: the original schema, and a precise error for every kind of bad file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sidecar_dispatcher.config import MAX_CONFIG_BYTES, ConfigError, load_config, parse_config
from sidecar_dispatcher.rules import Destination, HeaderPatch, RuleSet

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
    rules = parse("""
        key: environment
        destination: http://default.test
        rewrites:
          qa:
            patch: [{key: dispatched, val: yes-please}]
    """)
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
    rules = parse(f"""
        key: environment
        destination: http://default.test
        rewrites:
          dev:
            patch:
              - key: X-Value
                val: {written}
    """)
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


def test_broken_yaml_gives_line_and_column() -> None:
    message = only_problem("""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch:
              - key: Host
               val: x
    """)
    assert message.startswith("test.yaml:7:8: invalid YAML: ")
    assert "did not find expected '-' indicator" in message


def test_empty_file_is_an_error() -> None:
    assert "config is empty" in only_problem("")


def test_top_level_must_be_a_mapping() -> None:
    assert only_problem("- key: environment\n") == (
        "test.yaml:1:1: expected a mapping with 'key', 'destination', 'rewrites', got a list"
    )


def test_missing_required_keys_are_named() -> None:
    found = problems("rewrites: {}\n")
    assert "test.yaml:1:1: key: missing required key 'key'" in found
    assert "test.yaml:1:1: destination: missing required key 'destination'" in found


def test_unknown_key_suggests_the_nearest_known_key() -> None:
    message = only_problem("""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch:
              - key: Host
                value: x
    """)
    assert message.startswith("test.yaml:7:9: rewrites.dev.patch[0].value: unknown key 'value'")
    assert "did you mean 'val'?" in message


def test_unknown_top_level_key_suggests_destination() -> None:
    found = problems("key: environment\ndestnation: http://a.test\n")
    assert any(
        "destnation: unknown key 'destnation', did you mean 'destination'?" in p for p in found
    )


def test_null_value_is_an_error_that_suggests_quotes() -> None:
    message = only_problem("""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch:
              - key: Host
                val: example.com
              - key: dispatched
                val:
    """)
    assert message.startswith("test.yaml:9:13: rewrites.dev.patch[1].val: expected a header value")
    assert 'use "" for an empty one' in message


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (r'"a\r\nInjected: 1"', "carriage return (CR)"),
        (r'"a\nb"', "line feed (LF)"),
        (r'"a\0b"', "NUL byte"),
        (r'"bell\a"', "control character"),
    ],
)
def test_control_characters_in_values_are_refused(value: str, named: str) -> None:
    message = only_problem(f"""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch:
              - key: X-Token
                val: {value}
    """)
    assert message.startswith("test.yaml:7:14: rewrites.dev.patch[0].val: header value contains")
    assert named in message
    assert "header injection" in message or "inject headers" in message


def test_block_scalar_with_trailing_newline_is_refused() -> None:
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


@pytest.mark.parametrize("name", ["Bad Header", "X:Colon", "Ünïcode", '""'])
def test_invalid_header_names_are_refused(name: str) -> None:
    message = only_problem(f"""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch:
              - key: {name}
                val: x
    """)
    assert "rewrites.dev.patch[0].key:" in message


def test_invalid_key_header_name_is_refused() -> None:
    assert "test.yaml:1:6: key: 'my env' is not a valid header name" in only_problem(
        "key: my env\ndestination: http://a.test\n"
    )


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding"])
def test_framing_headers_cannot_be_patched(name: str) -> None:
    message = only_problem(f"""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch: [{{key: {name}, val: "0"}}]
    """)
    assert f"rewrites.dev.patch[0].key: {name} cannot be patched" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("example.com", "did you mean 'http://example.com'"),
        ("ftp://example.com", "expected an absolute http:// or https:// URL"),
        ("http://", "has no host"),
        ("http://a.test:99999", "port must be a number from 1 to 65535"),
        ("http://a.test:0", "port must be a number from 1 to 65535"),
        ("http://a.test/x?q=1", "may not have a query or fragment"),
        ("http://a.test/#top", "may not have a query or fragment"),
        ("http://user:pw@a.test", "credentials"),
        ("http://bad host.test", "is not a valid host name"),
        ("http://[::zz]", "is not a valid URL"),
        ("http://a.test/with space", "whitespace"),
        ("''", "got an empty string"),
        ("[http://a.test]", "got a list"),
        ("8080", "expected an absolute http:// or https:// URL, got '8080'"),
    ],
)
def test_bad_rule_destinations_are_refused(url: str, expected: str) -> None:
    message = only_problem(f"""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            destination: {url}
    """)
    assert message.startswith("test.yaml:5:18: rewrites.dev.destination: ")
    assert expected in message


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    message = only_problem("""
        key: environment
        destination: http://a.test
        rewrites:
          dev: {}
          dev: {}
    """)
    assert message == "test.yaml:5:3: rewrites.dev: duplicate key, already defined on line 4"


def test_rule_names_that_no_request_can_select_are_refused() -> None:
    found = problems("""
        key: environment
        destination: http://a.test
        rewrites:
          " dev ": {}
          "": {}
    """)
    assert any("surrounding whitespace" in p for p in found)
    assert any("cannot be empty" in p for p in found)


def test_patch_must_be_a_list_of_key_val_mappings() -> None:
    found = problems("""
        key: environment
        destination: http://a.test
        rewrites:
          dev:
            patch: {key: Host, val: x}
          qa:
            patch:
              - Host: x
    """)
    assert found[0] == (
        "test.yaml:5:12: rewrites.dev.patch: expected a list of {key, val} items, got a mapping"
    )
    assert "test.yaml:8:9: rewrites.qa.patch[0].Host: unknown key 'Host'" in found[1]
    assert "rewrites.qa.patch[0].key: missing required key 'key'" in found[2]


def test_unsupported_yaml_tags_and_merge_keys_are_refused() -> None:
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
