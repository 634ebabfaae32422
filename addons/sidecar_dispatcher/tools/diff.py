"""Which recorded requests a config change would send elsewhere: compare, group and count.

    report = DiffReport(show=3)
    for request in read_requests("traffic.flows"):
        report.add(compare(request, new_rules, old_rules))   # old_rules None: the recorded one
    print(report.text())

Each request is resolved under the new rules with the same `resolve` the addon runs, and
compared with its decision under the old rules, or with the decision the sidecar recorded. A
request changes when its rule, its destination (or the sidecar's own answer), the header edits
it gets or its rewritten path differ. Changes are grouped by what they are; a report keeps counts
and at most `show` example requests per group, so its memory does not grow with the traffic.
Header values are compared but never reported: they may be secrets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ..core.decision import label_for
from ..core.header_edits import HeaderList
from ..core.log_safety import printable
from ..core.model import RuleSet
from ..core.recording import RecordedRequest, RecordingError, without_query
from ..core.resolve import AmbiguousRequest, resolve, stable_hash

REFUSED_LABEL = "refused"  # conflicting key headers: the sidecar answers 400
FOLLOWS_DESTINATION = "(the destination's authority)"  # a Host that only follows the destination


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request lands: a rule (or default, unmatched, refused) and its destination."""

    rule: str | None
    label: str
    destination: str | None  # a URL; None when the sidecar answers
    answer: int | None = None  # the sidecar's status when it answers

    @classmethod
    def of(cls, decision: Mapping[str, Any]) -> Placement:
        """From a decision's metadata (`Decision.as_metadata()`), recorded or computed."""
        rule = decision.get("rule")
        answer = decision.get("answer")
        return cls(
            rule=rule,
            label=str(decision.get("label") or label_for(rule)),
            destination=decision.get("destination"),
            answer=answer.get("status") if isinstance(answer, Mapping) else None,
        )

    def describe(self) -> str:
        """`dev (http://dev.test)`, `unmatched (404 from the sidecar)`; escaped, as the names
        may come from a recording rather than a config."""
        where = self.destination or f"{self.answer} from the sidecar"
        return f"{printable(self.label)} ({printable(str(where))})"

    def as_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "label": self.label,
            "destination": self.destination,
            "answer": self.answer,
        }


REFUSED = Placement(None, REFUSED_LABEL, None, 400)

HeaderEdits = Mapping[str, tuple[str, tuple[str, ...], str | None]]  # lowercase name → edit


@dataclass(frozen=True, slots=True)
class Resolved:
    """A decision as the diff compares it."""

    placement: Placement
    edits: HeaderEdits  # by lowercase name: (name as written, operations, value set)
    path: str | None  # the path sent, without the destination's base path
    drawn_from: frozenset[str] = frozenset()  # a split by weight: the URLs it draws among

    @classmethod
    def of(cls, decision: Mapping[str, Any]) -> Resolved:
        placement = Placement.of(decision)
        path = decision.get("path")
        base = urlsplit(placement.destination).path if placement.destination else ""
        if isinstance(path, str) and base and path.startswith(base):
            path = path[len(base) :]
        return cls(placement, header_edits(decision, placement.destination), path)


def header_edits(decision: Mapping[str, Any], destination: str | None) -> HeaderEdits:
    """The header edits of a decision's metadata: `patched` (`Name`, `+Name`, `-Name`) and the
    values set (`headers_set`). A Host set to the destination's authority is not an edit of its
    own: it follows the destination, which is compared already."""
    # By exact name, in `patched` order: a recorded dictionary's order is not kept (mitmproxy's
    # flow files store dictionaries in reverse), and of `X-Twice` then `x-twice` the last wins.
    values = {str(name): str(value) for name, value in _mapping(decision, "headers_set")}
    patched = decision.get("patched")
    entries = [str(entry) for entry in patched] if isinstance(patched, list) else list(values)
    edits: dict[str, tuple[str, tuple[str, ...], str | None]] = {}
    for entry in entries:
        operation = {"+": "append", "-": "remove"}.get(entry[:1], "set")
        name = entry if operation == "set" else entry[1:]
        written, operations, value = edits.get(name.lower(), (name, (), None))
        if operation == "set":
            value = values.get(name)
        edits[name.lower()] = (written, (*operations, operation), value)
    host = edits.get("host")
    if host and destination and host[1] == ("set",) and host[2] == urlsplit(destination).netloc:
        edits["host"] = (host[0], host[1], FOLLOWS_DESTINATION)
    return edits


def _mapping(decision: Mapping[str, Any], key: str) -> list[tuple[object, object]]:
    found = decision.get(key)
    return list(found.items()) if isinstance(found, Mapping) else []


def resolve_again(rules: RuleSet, request: RecordedRequest) -> Resolved:
    """The request under `rules`. A split by weight draws the same number for the same request
    under every config, so that an unchanged split sends it to the same member."""
    point = stable_hash(request.identity) / 2**64
    try:
        decision = resolve(
            rules,
            HeaderList(request.headers),
            client_ip=request.client_ip,
            path=request.path,
            keep_host=request.keep_host,
            method=request.method,
            chooser=lambda: point,
        )
    except AmbiguousRequest:
        return Resolved(REFUSED, {}, None)
    resolved = Resolved.of(decision.as_metadata())
    if decision.split_member is None or decision.split_sticky:
        return resolved
    route = next(route for route in rules.routes if route.name == decision.rule)
    assert route.split is not None
    members = frozenset(member.destination.url for member in route.split.members)
    return replace(resolved, drawn_from=members)


@dataclass(frozen=True, slots=True)
class Change:
    """One request, before and after."""

    before: Placement
    after: Placement
    headers_changed: tuple[str, ...]  # names, as the config writes them
    path_changed: bool
    example: tuple[str, str]  # method and path, without the query

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.headers_changed) or self.path_changed


def compare(request: RecordedRequest, new: RuleSet, old: RuleSet | None) -> Change:
    """The request under `new` against `old`, or against its recorded decision."""
    after = resolve_again(new, request)
    if old is not None:
        before = resolve_again(old, request)
    elif request.decision is not None:
        before = Resolved.of(request.decision)
        recorded = before.placement
        if recorded.destination in after.drawn_from and recorded.rule == after.placement.rule:
            # The recorded member was drawn at random: staying in the split is no change.
            placement = replace(after.placement, destination=recorded.destination)
            after = replace(after, placement=placement)
    else:
        raise RecordingError(
            f"{request.where}: no dispatcher decision recorded (a request the sidecar refused, "
            "or traffic recorded without it): compare with --against OLD.yaml"
        )
    # Headers and paths are compared only for requests sent upstream under both configs.
    sent = None not in (before.placement.destination, after.placement.destination)
    return Change(
        before.placement,
        after.placement,
        changed_headers(before.edits, after.edits) if sent else (),
        path_changed=sent and before.path != after.path,
        example=(printable(request.method), without_query(request.path)),
    )


def changed_headers(before: HeaderEdits, after: HeaderEdits) -> tuple[str, ...]:
    """The names of the headers edited differently (or only on one side), in order."""
    absent = ("", (), None)
    return tuple(
        (after.get(name) or before[name])[0]
        for name in sorted(before.keys() | after.keys())
        if before.get(name, absent)[1:] != after.get(name, absent)[1:]
    )


@dataclass
class Group:
    count: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)


GroupKey = tuple[Placement, Placement, tuple[str, ...], bool]


class DiffReport:
    """Counts of the requests compared and, for each kind of change, a count and examples."""

    def __init__(self, show: int = 3) -> None:
        self.show = show
        self.total = 0
        self.changed = 0
        self.groups: dict[GroupKey, Group] = {}

    def add(self, change: Change) -> None:
        self.total += 1
        if not change.changed:
            return
        self.changed += 1
        key = (change.before, change.after, change.headers_changed, change.path_changed)
        group = self.groups.setdefault(key, Group())
        group.count += 1
        if len(group.examples) < self.show and change.example not in group.examples:
            group.examples.append(change.example)

    def ordered(self) -> list[tuple[GroupKey, Group]]:
        """The largest group first; ties in the order of their descriptions."""
        return sorted(
            self.groups.items(),
            key=lambda item: (-item[1].count, item[0][0].describe(), item[0][1].describe()),
        )

    def text(self) -> str:
        lines = [f"{self.total} requests, {self.changed} would change"]
        width = len(str(max((group.count for group in self.groups.values()), default=0)))
        for (before, after, headers, path_changed), group in self.ordered():
            line = f"  {group.count:>{width}}  {before.describe()} → {after.describe()}"
            if headers:
                line += f"  headers: {', '.join(headers)}"
            if path_changed:
                line += "  path rewritten differently"
            if group.examples:
                shown = ", ".join(f"{method} {path}" for method, path in group.examples)
                line += f"  e.g. {shown}"
            lines.append(line)
        return "\n".join(lines)

    def json(self) -> str:
        groups = [
            {
                "from": before.as_json(),
                "to": after.as_json(),
                "count": group.count,
                "headers_changed": list(headers),
                "path_changed": path_changed,
                "examples": [{"method": m, "path": p} for m, p in group.examples],
            }
            for (before, after, headers, path_changed), group in self.ordered()
        ]
        document = {"total": self.total, "changed": self.changed, "groups": groups}
        return json.dumps(document, ensure_ascii=False)
