"""Read the config's `routes` and `unmatched` into `Route` and `Unmatched` specs.

    routes = RouteReader(reader).routes(node)      # reader: the ConfigReader walking the file

Every problem is reported through the `ConfigReader`, with its line, column and key path
(`routes[2].match.headers.x-session.regex`), and reading goes on to find the others.
"""

from __future__ import annotations

import yaml

from ..core.header_syntax import FRAMING_HEADERS
from ..core.matching import Match
from ..core.model import (
    Destination,
    HeaderAppend,
    HeaderEdit,
    HeaderPatch,
    HeaderRemoval,
    Mirror,
    Route,
    Rule,
    Split,
    SplitMember,
    Unmatched,
)
from .matches import MatchReader
from .numbers import number, whole_number
from .walker import ConfigReader
from .yaml_nodes import is_null

ROUTE_KEYS = (
    "name",
    "match",
    "destination",
    "split",
    "sticky",
    "patch",
    "append",
    "remove",
    "rewrite_path",
    "response",
    "timeout",
    "mirror",
)
MAX_ROUTES = 10_000
MAX_TIMEOUT = 3600.0  # seconds: an hour; longer is a mistake, not a timeout
NO_BODY_STATUSES = frozenset({204, 205, 304})  # RFC 9110 §15.3.5, §15.3.6, §15.4.5


class RouteReader:
    """Reads routes through the reader's leaves (scalars, names, destinations, patches)."""

    def __init__(self, reader: ConfigReader) -> None:
        self.reader = reader
        # Where each route's name is (node, key path): for clashes and later problems.
        self.name_nodes: dict[str, tuple[yaml.Node, str]] = {}

    def routes(self, node: yaml.Node) -> tuple[Route, ...]:
        if is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.reader.expected(node, "routes", "a list of routes")
            return ()
        routes = []
        for index, item in enumerate(node.value[:MAX_ROUTES]):
            self.reader.count_item(item, f"routes[{index}]")
            route = self.route(item, f"routes[{index}]")
            if route is not None:
                routes.append(route)
        if len(node.value) > MAX_ROUTES:
            self.reader.problem(node, "routes", f"more than {MAX_ROUTES} routes")
        return tuple(routes)

    def route(self, node: yaml.Node, path: str) -> Route | None:
        reader = self.reader
        fields = reader.mapping(node, path, ROUTE_KEYS, required=("name",))
        name = self.name(fields["name"], f"{path}.name") if "name" in fields else None
        match = Match()
        if "match" in fields:
            match = MatchReader(reader).match(fields["match"], f"{path}.match")
        destination = split = None
        if "destination" in fields and "split" in fields:
            reader.problem(fields["split"], f"{path}.split", "give destination or split, not both")
        elif "destination" in fields:
            destination = reader.destination(fields["destination"], f"{path}.destination")
        elif "split" in fields:
            split = self.split(fields["split"], f"{path}.split")
        if "sticky" in fields:
            sticky = reader.header_name(fields["sticky"], f"{path}.sticky")
            if split is None and "split" not in fields:
                reader.problem(fields["sticky"], f"{path}.sticky", "sticky needs a split")
            elif split is not None and sticky is not None:
                split = Split(split.members, sticky.lower())
        edits = self.request_edits(fields, path)
        rewrite = None
        if "rewrite_path" in fields:
            rewrite = self.rewrite_prefix(fields["rewrite_path"], f"{path}.rewrite_path", match)
        response: tuple[HeaderPatch | HeaderRemoval, ...] = ()
        if "response" in fields:
            response = self.response(fields["response"], f"{path}.response")
        timeout = None
        if "timeout" in fields:
            timeout = number(reader, fields["timeout"], f"{path}.timeout", 0.0, MAX_TIMEOUT)
        mirror = self.mirror(fields["mirror"], f"{path}.mirror") if "mirror" in fields else None
        if name is None:
            return None
        return Route(
            name=name,
            match=match,
            destination=destination,
            split=split,
            request_headers=edits,
            response_headers=response,
            rewrite_prefix=rewrite,
            timeout=timeout,
            mirror=mirror,
        )

    def name(self, node: yaml.Node, path: str) -> str | None:
        text = self.reader.scalar(node, path, "a route name")
        if text is None:
            return None
        if not text.strip() or text != text.strip() or not text.isprintable():
            why = "printable, without surrounding spaces: it is shown in logs and metrics"
            self.reader.problem(node, path, f"route name {text!r} is not usable ({why})")
            return None
        if text in self.name_nodes:
            line = self.name_nodes[text][0].start_mark.line + 1
            self.reader.problem(node, path, f"route name {text!r} is already used on line {line}")
            return None
        self.name_nodes[text] = (node, path)
        return text

    # --- where to, and what changes

    def split(self, node: yaml.Node, path: str) -> Split | None:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.reader.expected(node, path, "a non-empty list of {destination, weight}")
            return None
        members = []
        for index, item in enumerate(node.value):
            where = f"{path}[{index}]"
            self.reader.count_item(item, where)
            fields = self.reader.mapping(
                item, where, ("destination", "weight"), ("destination", "weight")
            )
            destination = weight = None
            if "destination" in fields:
                destination = self.reader.destination(fields["destination"], f"{where}.destination")
            if "weight" in fields:
                weight = whole_number(self.reader, fields["weight"], f"{where}.weight", 1, 10**6)
            if destination is not None and weight is not None:
                members.append(SplitMember(destination, weight))
        return Split(tuple(members)) if len(members) == len(node.value) else None

    def request_edits(self, fields: dict[str, yaml.Node], path: str) -> tuple[HeaderEdit, ...]:
        """`remove`, then `patch`, then `append`: the order they are applied in."""
        edits: list[HeaderEdit] = []
        if "remove" in fields:
            edits.extend(self.removals(fields["remove"], f"{path}.remove"))
        if "patch" in fields:
            edits.extend(self.reader.patches(fields["patch"], f"{path}.patch"))
        if "append" in fields:
            appended = self.reader.patches(fields["append"], f"{path}.append")
            for index, patch in enumerate(appended):
                if patch.name.lower() == "host":  # two Host fields: servers must answer 400
                    where = f"{path}.append[{index}].key"
                    self.reader.problem(fields["append"], where, "Host cannot be appended to")
                    continue
                edits.append(HeaderAppend(patch.name, patch.value))
        return tuple(edits)

    def removals(self, node: yaml.Node, path: str) -> list[HeaderRemoval]:
        if not isinstance(node, yaml.SequenceNode):
            self.reader.expected(node, path, "a list of header names")
            return []
        removals = []
        for index, item in enumerate(node.value):
            self.reader.count_item(item, f"{path}[{index}]")
            name = self.reader.header_name(item, f"{path}[{index}]")
            if name is None:
                continue
            if name.lower() in FRAMING_HEADERS | {"host"}:
                self.reader.problem(item, f"{path}[{index}]", f"{name} cannot be removed")
                continue
            removals.append(HeaderRemoval(name))
        return removals

    def response(self, node: yaml.Node, path: str) -> tuple[HeaderPatch | HeaderRemoval, ...]:
        fields = self.reader.mapping(node, path, ("patch", "remove"))
        edits: list[HeaderPatch | HeaderRemoval] = []
        if "remove" in fields:
            edits.extend(self.removals(fields["remove"], f"{path}.remove"))
        if "patch" in fields:
            edits.extend(self.reader.patches(fields["patch"], f"{path}.patch"))
        return tuple(edits)

    def rewrite_prefix(self, node: yaml.Node, path: str, match: Match) -> str | None:
        fields = self.reader.mapping(node, path, ("prefix",), required=("prefix",))
        if "prefix" not in fields:
            return None
        text = self.reader.scalar(fields["prefix"], f"{path}.prefix", "a path prefix")
        if text is None:
            return None
        if not text.startswith("/"):
            self.reader.problem(
                fields["prefix"], f"{path}.prefix", f"a path starts with '/', got {text!r}"
            )
            return None
        if match.path is None or match.path.kind != "prefix":
            message = "rewrite_path replaces the prefix that match.path.prefix matched: add one"
            self.reader.problem(node, path, message)
            return None
        return text

    def mirror(self, node: yaml.Node, path: str) -> Mirror | None:
        fields = self.reader.mapping(node, path, ("destination", "percent"), ("destination",))
        destination: Destination | None = None
        if "destination" in fields:
            destination = self.reader.destination(fields["destination"], f"{path}.destination")
        percent: float | None = 100.0
        if "percent" in fields:
            percent = number(self.reader, fields["percent"], f"{path}.percent", 0.0, 100.0)
        if destination is None or percent is None:
            return None
        return Mirror(destination, percent)

    def unmatched(self, node: yaml.Node) -> Unmatched | None:
        fields = self.reader.mapping(node, "unmatched", ("status", "body"))
        status: int | None = 404
        if "status" in fields:
            status = whole_number(self.reader, fields["status"], "unmatched.status", 200, 599)
        body: str | None = ""
        if "body" in fields:  # any text, line breaks included
            body = self.reader.scalar(fields["body"], "unmatched.body", 'a text (use "" for none)')
        if status in NO_BODY_STATUSES and body:
            message = f"a {status} response has no body: leave out body, or choose another status"
            self.reader.problem(fields["body"], "unmatched.body", message)
            return None
        if status is None or body is None:
            return None
        return Unmatched(status, body)

    def nowhere_to_go(self, rules: dict[str, Rule], routes: tuple[Route, ...]) -> None:
        """Without a default destination, every rule and route must name its own."""
        message = "needs a destination: the config has no default destination (unmatched)"
        for name, rule in rules.items():
            if rule.destination is None:
                self.reader.problem(self.reader.rule_nodes[name], f"rewrites.{name}", message)
        for route in routes:
            if route.destination is None and route.split is None:
                node, path = self.name_nodes[route.name]
                self.reader.problem(node, path.removesuffix(".name"), message)
