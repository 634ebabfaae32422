"""The walk over a composed YAML node tree: leaves, mappings and limits, each problem located.

    class RuleSetReader(ConfigReader): ...   # reader.py; routes.py, matches.py, numbers.py use it

Nodes, not constructed Python values, are read so that each problem keeps its line and column.
A reader collects problems instead of stopping at the first; `TooLarge` stops a hostile file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator

import yaml

from ..core.header_syntax import FRAMING_HEADERS, header_name_problem, header_value_problem
from ..core.model import Destination, HeaderPatch
from .destinations import parse_destination
from .problems import Problem
from .yaml_nodes import SCALAR_TAGS, TAG, is_null, kind_of, unknown_key_message

# Aliases are never expanded, but a rule or patch list reached through an alias counts each
# time: these bound the time and memory a hostile file can cost.
MAX_PATCHES = 10_000  # header patches in all rules together
MAX_ITEMS = 50_000  # route conditions, values, methods, removals and split members together
MAX_PROBLEMS = 100  # reported; more are summarised in one line

PATCH_KEYS = ("key", "val")


class TooLarge(Exception):
    """Stops reading a config that exceeds a limit; carries where and why."""

    def __init__(self, node: yaml.Node, path: str, message: str) -> None:
        self.line, self.column = node.start_mark.line + 1, node.start_mark.column + 1
        self.path, self.message = path, message


class ConfigReader:
    """Walks the YAML node tree, collecting problems instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.patches_read = 0
        self.items_read = 0
        self.rule_nodes: dict[str, yaml.Node] = {}  # where each rule is, for later problems

    def sorted_problems(self) -> list[Problem]:
        problems = sorted(self.problems, key=lambda p: (p.line, p.column))
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            last = problems[MAX_PROBLEMS]
            summary = Problem(
                self.source, last.line, last.column, "", f"... and {more} more problems"
            )
            problems = [*problems[:MAX_PROBLEMS], summary]
        return problems

    # --- header patches

    def patches(self, node: yaml.Node, path: str) -> tuple[HeaderPatch, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, path, f"expected a list of {{key, val}} items, got {kind_of(node)}")
            return ()
        patches = []
        for index, item in enumerate(node.value):
            item_path = f"{path}[{index}]"
            self.patches_read += 1
            if self.patches_read > MAX_PATCHES:
                message = f"more than {MAX_PATCHES} header patches in all rules (an alias counts "
                raise TooLarge(item, item_path, message + "each time it is used)")
            fields = self.mapping(item, item_path, PATCH_KEYS, required=PATCH_KEYS)
            name = self.header_name(fields["key"], f"{item_path}.key") if "key" in fields else None
            if name is not None and name.lower() in FRAMING_HEADERS:
                self.problem(
                    fields["key"],
                    f"{item_path}.key",
                    f"{name} cannot be patched: mitmproxy sets it from the body",
                )
                name = None
            value = (
                self.header_value(fields["val"], f"{item_path}.val") if "val" in fields else None
            )
            if name is not None and value is not None:
                patches.append(HeaderPatch(name, value))
        return tuple(patches)

    # --- leaves

    def header_name(self, node: yaml.Node, path: str) -> str | None:
        return self.checked_scalar(node, path, "a header name", header_name_problem)

    def header_value(self, node: yaml.Node, path: str) -> str | None:
        expected = 'a header value (use "" for an empty one)'
        return self.checked_scalar(node, path, expected, header_value_problem)

    def checked_scalar(
        self, node: yaml.Node, path: str, expected: str, problem_of: Callable[[str], str | None]
    ) -> str | None:
        """A scalar's text if `problem_of` finds nothing wrong with it, else None (reported)."""
        text = self.scalar(node, path, expected)
        if text is None:
            return None
        if problem := problem_of(text):
            self.problem(node, path, problem)
            return None
        return text

    def destination(self, node: yaml.Node, path: str) -> Destination | None:
        text = self.scalar(node, path, "an http:// or https:// URL")
        if text is None:
            return None
        try:
            return parse_destination(text)
        except ValueError as e:
            self.problem(node, path, str(e))
            return None

    def rule_name(self, node: yaml.Node) -> str | None:
        text = self.scalar(node, "rewrites", "a key header value as rule name")
        if text is None:
            return None
        path = f"rewrites.{text}"
        if not text.strip():
            self.problem(node, path, "a rule name cannot be empty: no request could select it")
        elif text != text.strip():
            self.problem(
                node,
                path,
                f"rule name {text!r} has surrounding whitespace, which is "
                "ignored in the key header, so no request could select it",
            )
        elif problem := header_value_problem(text):
            self.problem(node, path, problem)
        else:
            return text
        return None

    def scalar(self, node: yaml.Node, path: str, expected: str) -> str | None:
        """The text of a scalar as written; YAML booleans spelled true/false become lowercase."""
        if not isinstance(node, yaml.ScalarNode) or is_null(node):
            self.problem(node, path, f"expected {expected}, got {kind_of(node)}")
            return None
        if node.tag not in SCALAR_TAGS:
            self.problem(node, path, f"expected {expected}, got a value tagged {node.tag}")
            return None
        value: str = node.value
        if node.tag == f"{TAG}bool" and value.lower() in ("true", "false"):
            return value.lower()
        return value

    # --- mappings

    def mapping(
        self, node: yaml.Node, path: str, known: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, yaml.Node]:
        """Fields of a mapping with known keys; unknown, duplicate and missing keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            wanted = ", ".join(repr(k) for k in known)
            self.problem(node, path, f"expected a mapping with {wanted}, got {kind_of(node)}")
            return {}
        fields: dict[str, yaml.Node] = {}
        suggested: set[str] = set()
        for key_node, value_node in self.pairs(node, path):
            key = key_node.value
            key_path = f"{path}.{key}" if path else key
            if key in known:
                fields[key] = value_node
            elif key == "<<":
                self.problem(
                    key_node,
                    key_path,
                    "YAML merge keys (<<) are not supported; "
                    "repeat the fields or use an alias (*name) for the whole value",
                )
            else:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                suggested.update(close)
                self.problem(key_node, key_path, unknown_key_message(key, close, known))
        for key in required:
            if key not in fields and key not in suggested:  # a suggestion already said it
                self.problem(
                    node, f"{path}.{key}" if path else key, f"missing required key {key!r}"
                )
        return fields

    def pairs(self, node: yaml.Node, path: str) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """Key/value pairs of a mapping node, refusing duplicate and non-scalar keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, path, f"expected a mapping, got {kind_of(node)}")
            return
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, f"expected a scalar key, got {kind_of(key_node)}")
                continue
            first = seen.setdefault(key_node.value, key_node)
            if first is not key_node:
                where = f"line {first.start_mark.line + 1}"
                key_path = f"{path}.{key_node.value}" if path else key_node.value
                self.problem(key_node, key_path, f"duplicate key, already defined on {where}")
                continue
            yield key_node, value_node

    def count_item(self, node: yaml.Node, path: str) -> None:
        """One more route item; stops at MAX_ITEMS, an alias counting each time it is used."""
        self.items_read += 1
        if self.items_read > MAX_ITEMS:
            message = f"more than {MAX_ITEMS} route conditions, values and edits in all"
            raise TooLarge(node, path, message + " (an alias counts each time it is used)")

    def expected(self, node: yaml.Node, path: str, what: str) -> None:
        self.problem(node, path, f"expected {what}, got {kind_of(node)}")

    def problem(self, node: yaml.Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.source, mark.line + 1, mark.column + 1, path, message))
