"""Read a route's `match` into a `Match`: header, path and method conditions, regexes compiled.

match = MatchReader(reader).match(node, "routes[0].match")
"""

from __future__ import annotations

import yaml

from ..core.matching import HeaderCondition, Match, PathCondition, Pattern, compile_regex
from .walker import ConfigReader
from .yaml_nodes import TAG, is_null

MATCH_KEYS = ("headers", "path", "methods")
HEADER_KINDS = ("one_of", "prefix", "regex", "present")
PATH_KINDS = ("exact", "prefix", "regex")

YAML_TRUE = frozenset({"true", "yes", "on", "y"})


class MatchReader:
    def __init__(self, reader: ConfigReader) -> None:
        self.reader = reader

    def match(self, node: yaml.Node, path: str) -> Match:
        if is_null(node):
            return Match()
        fields = self.reader.mapping(node, path, MATCH_KEYS)
        headers: list[HeaderCondition] = []
        if "headers" in fields:
            seen: set[str] = set()
            for name_node, value_node in self.reader.pairs(fields["headers"], f"{path}.headers"):
                self.reader.count_item(name_node, f"{path}.headers")
                name = self.reader.header_name(name_node, f"{path}.headers")
                if name is None:
                    continue
                condition_path = f"{path}.headers.{name}"
                if name.lower() in seen:
                    message = f"header {name!r} is matched twice (names are case-insensitive)"
                    self.reader.problem(name_node, condition_path, message)
                    continue
                seen.add(name.lower())
                condition = self.header_condition(name.lower(), value_node, condition_path)
                if condition is not None:
                    headers.append(condition)
        path_condition = None
        if "path" in fields:
            path_condition = self.path_condition(fields["path"], f"{path}.path")
        methods = (
            self.methods(fields["methods"], f"{path}.methods") if "methods" in fields else None
        )
        return Match(tuple(headers), path_condition, methods)

    def header_condition(self, name: str, node: yaml.Node, path: str) -> HeaderCondition | None:
        """`name: value` (exact), or `name: {one_of | prefix | regex | present: …}`."""
        if isinstance(node, yaml.ScalarNode) and not is_null(node):
            value = self.matchable_value(node, path)
            return HeaderCondition(name, "exact", (value,)) if value is not None else None
        kind, value_node = self.one_of_kinds(node, path, HEADER_KINDS)
        if kind is None or value_node is None:
            return None
        where = f"{path}.{kind}"
        if kind == "present":
            return self.presence(name, value_node, where)
        if kind == "one_of":
            return self.one_of(name, value_node, where)
        return self.text_condition(name, kind, value_node, where)

    def text_condition(
        self, name: str, kind: str, node: yaml.Node, path: str
    ) -> HeaderCondition | None:
        """`prefix` or `regex`: one text."""
        text = self.reader.header_value(node, path) if kind == "regex" else None
        if kind == "prefix":
            text = self.matchable_value(node, path)
        if text is None:
            return None
        if kind == "prefix":
            return HeaderCondition(name, "prefix", (text,))
        regex = self.regex(text, node, path)
        return HeaderCondition(name, "regex", (text,), regex=regex) if regex else None

    def presence(self, name: str, node: yaml.Node, path: str) -> HeaderCondition | None:
        if node.tag != f"{TAG}bool":
            self.reader.expected(node, path, "true or false")
            return None
        # YAML 1.1 booleans, as the schema and every YAML tool read them: yes/on/true/y.
        present = node.value.lower() in YAML_TRUE
        return HeaderCondition(name, "present", present=present)

    def one_of(self, name: str, node: yaml.Node, path: str) -> HeaderCondition | None:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.reader.expected(node, path, "a list of values")
            return None
        values = []
        for index, item in enumerate(node.value):
            self.reader.count_item(item, f"{path}[{index}]")
            values.append(self.matchable_value(item, f"{path}[{index}]"))
        if None in values:
            return None
        return HeaderCondition(name, "one_of", tuple(v for v in values if v is not None))

    def path_condition(self, node: yaml.Node, path: str) -> PathCondition | None:
        kind, value_node = self.one_of_kinds(node, path, PATH_KINDS)
        if kind is None or value_node is None:
            return None
        where = f"{path}.{kind}"
        text = self.reader.scalar(value_node, where, "a path")
        if text is None:
            return None
        if kind == "regex":
            regex = self.regex(text, value_node, where)
            return PathCondition("regex", text, regex) if regex else None
        if not text.startswith("/"):
            self.reader.problem(value_node, where, f"a path starts with '/', got {text!r}")
            return None
        return PathCondition(kind, text)

    def methods(self, node: yaml.Node, path: str) -> frozenset[str] | None:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.reader.expected(node, path, "a list of methods")
            return None
        methods = set()
        for index, item in enumerate(node.value):
            self.reader.count_item(item, f"{path}[{index}]")
            method = self.reader.header_name(item, f"{path}[{index}]")  # a method is a token
            if method is not None:
                methods.add(method.upper())
        return frozenset(methods)

    def matchable_value(self, node: yaml.Node, path: str) -> str | None:
        """A header value to compare with; request values are trimmed, so these must be too."""
        text = self.reader.header_value(node, path)
        if text is not None and text != text.strip(" \t"):
            message = f"{text!r} has surrounding spaces or tabs, which no request value keeps"
            self.reader.problem(node, path, message + ": it could never match")
            return None
        return text

    def one_of_kinds(
        self, node: yaml.Node, path: str, kinds: tuple[str, ...]
    ) -> tuple[str | None, yaml.Node | None]:
        """The single `kind: value` of a mapping that must hold exactly one of `kinds`."""
        fields = self.reader.mapping(node, path, kinds)
        if len(fields) != 1:
            if fields or isinstance(node, yaml.MappingNode):
                wanted = ", ".join(kinds)
                self.reader.problem(node, path, f"expected exactly one of {wanted}")
            return None, None
        ((kind, value_node),) = fields.items()
        return kind, value_node

    def regex(self, text: str, node: yaml.Node, path: str) -> Pattern | None:
        try:
            return compile_regex(text)
        except ValueError as e:
            self.reader.problem(node, path, str(e))
            return None
