"""Numbers in a config: whole numbers and decimals within bounds, or a located problem.

    weight = whole_number(reader, node, "routes[0].split[1].weight", 1, 1_000_000)

Numbers are read as YAML reads them, so that the loader, the schema and editors agree.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from .walker import ConfigReader
from .yaml_nodes import TAG

# YAML's own reading of a number (0x10, 0o17, 1_000, YAML 1.1's 010 = 8), as the schema and
# every YAML tool read it.
_YAML = SafeConstructor()


def whole_number(
    reader: ConfigReader, node: yaml.Node, path: str, low: int, high: int
) -> int | None:
    """An integer from `low` to `high`, else None (a problem is reported)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == f"{TAG}int":
        try:
            value: int | None = _YAML.construct_yaml_int(node)
        except (ConstructorError, ValueError):
            value = None
        if value is not None and low <= value <= high:
            return value
    reader.expected(node, path, f"a whole number from {low} to {high}")
    return None


def number(
    reader: ConfigReader, node: yaml.Node, path: str, above: float, high: float
) -> float | None:
    """A number more than `above` and at most `high`, else None (a problem is reported)."""
    if isinstance(node, yaml.ScalarNode) and node.tag in (f"{TAG}int", f"{TAG}float"):
        construct: Callable[[yaml.ScalarNode], object] = (
            _YAML.construct_yaml_int if node.tag.endswith("int") else _YAML.construct_yaml_float
        )
        try:
            value: float | None = float(construct(node))  # type: ignore[arg-type]
        except (ConstructorError, ValueError):
            value = None
        if value is not None and above < value <= high:
            return value
    reader.expected(node, path, f"a number more than {above:g} and at most {high:g}")
    return None
