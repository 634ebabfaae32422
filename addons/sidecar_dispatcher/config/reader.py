"""Walk a composed YAML node tree into a `RuleSet`, collecting every problem on the way.

    rules = read_rule_set(yaml.compose(text, Loader=yaml.CSafeLoader), "config.yaml")

The schema is read one level at a time: top-level keys and rules here, `routes` and `unmatched`
in routes.py (which reads matches with matches.py and numbers with numbers.py), leaves and
mappings in walker.py.
"""

from __future__ import annotations

from types import MappingProxyType

import yaml

from ..core.model import Rule, RuleSet
from .problems import ConfigError, Problem
from .routes import RouteReader
from .walker import ConfigReader, TooLarge
from .yaml_nodes import is_null

# Aliases are never expanded, but a rule reached through an alias counts each time.
MAX_RULES = 10_000

TOP_LEVEL_KEYS = ("key", "destination", "rewrites", "routes", "unmatched")
RULE_KEYS = ("patch", "destination")


def read_rule_set(root: yaml.Node | None, source: str) -> RuleSet:
    """The RuleSet a composed document describes; ConfigError listing every problem."""
    reader = RuleSetReader(source)
    try:
        return reader.read(root)
    except TooLarge as e:
        raise ConfigError(
            [*reader.sorted_problems(), Problem(source, e.line, e.column, e.path, e.message)]
        ) from None


class RuleSetReader(ConfigReader):
    """Reads the whole document: the top-level keys, then each part with its own reader."""

    def read(self, root: yaml.Node | None) -> RuleSet:
        if root is None:
            self.problems.append(
                Problem(
                    self.source,
                    1,
                    1,
                    "",
                    "config is empty; expected a mapping with "
                    "'key', 'destination' and optionally 'rewrites'",
                )
            )
            raise ConfigError(self.problems)
        has_unmatched = isinstance(root, yaml.MappingNode) and any(
            getattr(key_node, "value", None) == "unmatched" for key_node, _ in root.value
        )
        # `destination` may be left out only when `unmatched` says what to answer instead.
        required = ("key",) if has_unmatched else ("key", "destination")
        fields = self.mapping(root, "", TOP_LEVEL_KEYS, required=required)
        key = default = unmatched = None
        if "key" in fields:
            key = self.header_name(fields["key"], "key")
        if "destination" in fields:
            default = self.destination(fields["destination"], "destination")
        rules = self._rules(fields["rewrites"]) if "rewrites" in fields else {}
        route_reader = RouteReader(self)
        routes = route_reader.routes(fields["routes"]) if "routes" in fields else ()
        if "unmatched" in fields:
            unmatched = route_reader.unmatched(fields["unmatched"])
        for name, (node, path) in route_reader.name_nodes.items():
            if name in rules:
                self.problem(node, path, f"route name {name!r} is also a rule in rewrites")
        if "destination" not in fields and "unmatched" in fields:
            route_reader.nowhere_to_go(rules, routes)
        if self.problems or key is None or (default is None and unmatched is None):
            raise ConfigError(self.sorted_problems())
        return RuleSet(
            key=key,
            default=default,
            rewrites=MappingProxyType(rules),
            routes=routes,
            unmatched=unmatched,
        )

    def _rules(self, node: yaml.Node) -> dict[str, Rule]:
        if is_null(node):  # `rewrites:` with nothing under it: no rules
            return {}
        rules: dict[str, Rule] = {}
        for index, (name_node, rule_node) in enumerate(self.pairs(node, "rewrites")):
            if index == MAX_RULES:
                raise TooLarge(name_node, "rewrites", f"more than {MAX_RULES} rules")
            name = self.rule_name(name_node)
            if name is None:
                continue
            path = f"rewrites.{name}"
            fields = self.mapping(rule_node, path, RULE_KEYS)
            patches = self.patches(fields["patch"], f"{path}.patch") if "patch" in fields else ()
            destination = None
            if "destination" in fields:
                destination = self.destination(fields["destination"], f"{path}.destination")
            rules[name] = Rule(name=name, patches=patches, destination=destination)
            self.rule_nodes[name] = name_node
        return rules
