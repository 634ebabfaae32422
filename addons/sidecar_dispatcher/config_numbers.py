"""Numbers in a config: whole numbers and decimals within bounds, or a located problem.

weight = whole_number(reader, node, "routes[0].split[1].weight", 1, 1_000_000)
"""

from __future__ import annotations

import yaml

from .config_reader import ConfigReader

_TAG = "tag:yaml.org,2002:"


def whole_number(
    reader: ConfigReader, node: yaml.Node, path: str, low: int, high: int
) -> int | None:
    """An integer from `low` to `high`, else None (a problem is reported)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == f"{_TAG}int":
        try:
            value = int(node.value, 0)
        except ValueError:
            value = None
        if value is not None and low <= value <= high:
            return value
    reader.expected(node, path, f"a whole number from {low} to {high}")
    return None


def number(
    reader: ConfigReader, node: yaml.Node, path: str, above: float, high: float
) -> float | None:
    """A number more than `above` and at most `high`, else None (a problem is reported)."""
    if isinstance(node, yaml.ScalarNode) and node.tag in (f"{_TAG}int", f"{_TAG}float"):
        try:
            value = float(node.value)
        except ValueError:
            value = None
        if value is not None and above < value <= high:
            return value
    reader.expected(node, path, f"a number more than {above:g} and at most {high:g}")
    return None
