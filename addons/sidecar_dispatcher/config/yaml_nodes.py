"""Small facts about composed YAML nodes: their tags, null, and how to name what was found.

if is_null(node): ...
reader.problem(node, path, f"expected a list, got {kind_of(node)}")
"""

from __future__ import annotations

import yaml

TAG = "tag:yaml.org,2002:"
SCALAR_TAGS = {f"{TAG}{name}" for name in ("str", "int", "float", "bool", "timestamp")}


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == f"{TAG}null"


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing (null)"
    return f"{node.value!r}"


def unknown_key_message(key: str, close: list[str], known: tuple[str, ...]) -> str:
    expected = ", ".join(repr(k) for k in known)
    if close:
        return f"unknown key {key!r}, did you mean {close[0]!r}? (expected one of {expected})"
    return f"unknown key {key!r} (expected one of {expected})"
