"""How `validate` and `explain` put a config and a decision into words.

    print(describe_rules(load_config("config.yaml")))

Pure text, no I/O: the commands print what these return. Header values of patches are never
shown by `validate` (they may be tokens); `explain` shows the request's own, as the client sent
them, with the decision's edits applied.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..core.decision import Decision
from ..core.header_edits import HeaderList
from ..core.matching import Match, RequestView
from ..core.model import HeaderAppend, HeaderEdit, HeaderRemoval, Route, RuleSet, Unmatched

EVERY_REQUEST = "every request"
LABEL = 14  # the width of the labels of validate's routes and of explain's lines


def describe_rules(rule_set: RuleSet) -> str:
    default = rule_set.default if rule_set.default is not None else "none (see unmatched)"
    lines = [f"  key:         {rule_set.key}", f"  default:     {default}"]
    if rule_set.routes:
        lines.append(f"  routes:      {len(rule_set.routes)}, tried in order before the rules")
        for index, route in enumerate(rule_set.routes, 1):
            lines.append(f"    {index}. {route.name}")
            lines.extend(f"       {line}" for line in describe_route(route, rule_set))
            if describe_match(route.match) == EVERY_REQUEST and (
                index < rule_set.rule_count or rule_set.unmatched is not None
            ):
                lines.append(f"       {labelled('', 'so nothing after this route is used')}")
    lines.append(f"  rules:       {len(rule_set.rewrites)}")
    width = max((len(name) for name in rule_set.rewrites), default=0)
    for name, rule in rule_set.rewrites.items():
        destination = rule.destination or f"{rule_set.default} (default)"
        patched = ", ".join(patch.name for patch in rule.patches) or "none"
        lines.append(f"    {name:<{width}}  → {destination}  patches: {patched}")
    if rule_set.unmatched is not None:
        lines.append(f"  unmatched:   {describe_answer(rule_set.unmatched)}")
    return "\n".join(lines)


def describe_route(route: Route, rule_set: RuleSet) -> list[str]:
    """A route's lines in `validate`'s summary: header names only, as for rules (values may be
    secrets); `explain` shows the values."""
    lines = [labelled("match:", describe_match(route.match))]
    if route.split is not None:
        split = route.split
        width = max(len(str(member.weight)) for member in split.members)
        for number, member in enumerate(split.members):
            label = "split:" if number == 0 else ""
            weight = f"weight {member.weight:<{width}}"
            lines.append(labelled(label, f"{weight}  → {member.destination}"))
        how = f"sticky on {split.sticky}" if split.sticky else "random by weight"
        lines.append(labelled("", how))
    else:
        destination = route.destination or f"{rule_set.default} (default)"
        lines.append(labelled("destination:", str(destination)))
    if route.rewrite_prefix is not None and route.match.path is not None:
        lines.append(labelled("path:", f"{route.match.path.value} → {route.rewrite_prefix}"))
    if route.request_headers:
        lines.append(labelled("request:", describe_edits(route.request_headers, values=False)))
    if route.response_headers:
        lines.append(labelled("response:", describe_edits(route.response_headers, values=False)))
    if route.timeout is not None:
        lines.append(labelled("timeout:", f"{route.timeout:g} s"))
    if route.mirror is not None:
        mirror = route.mirror
        lines.append(labelled("mirror:", f"{mirror.destination} ({mirror.percent:g}% of requests)"))
    return lines


def describe_match(match: Match) -> str:
    """The conditions in words, all of which must hold: `x-user exact 'alice' and method GET`."""
    conditions = [condition.describe() for condition in match.headers]
    if match.path is not None:
        conditions.append(match.path.describe())
    if match.methods is not None:
        conditions.append(f"method {' or '.join(sorted(match.methods))}")
    return " and ".join(conditions) or EVERY_REQUEST


def describe_edits(edits: Iterable[HeaderEdit], *, values: bool) -> str:
    """`remove Server; set X-Env; append Via`, in the order they are applied."""
    words = []
    for edit in edits:
        if isinstance(edit, HeaderRemoval):
            words.append(f"remove {edit.name}")
        elif isinstance(edit, HeaderAppend):
            words.append(f"append {edit.name}" + (f": {edit.value}" if values else ""))
        else:
            words.append(f"set {edit.name}" + (f": {edit.value}" if values else ""))
    return "; ".join(words)


def describe_answer(answer: Unmatched) -> str:
    body = f"body {answer.body!r}" if answer.body else "empty body"
    return f"{answer.status} from the sidecar, {body}"


def labelled(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


def not_matched(rules: RuleSet, headers: HeaderList, method: str, path: str) -> list[str]:
    """For `--verbose`: each route tried before the one that matched, and why it did not."""
    view = RequestView.of(headers.items(multi=True), method, path)
    lines: list[str] = []
    for route in rules.routes:
        failed = route.match.mismatches(view)
        if not failed:
            break
        label = "not matched:" if not lines else ""
        lines.append(labelled(label, f"{route.name}: {'; '.join(failed)}"))
    return lines


def describe_pick(route: Route, decision: Decision, headers: HeaderList) -> str:
    """Which member of the route's split the decision took, and why."""
    assert route.split is not None and decision.split_member is not None
    split, number = route.split, decision.split_member
    member = split.members[number]
    text = f"member {number + 1} of {len(split.members)}, weight {member.weight} of {split.total}"
    if decision.split_sticky and split.sticky:
        value = RequestView.of(headers.items(multi=True), "GET", "/").headers[split.sticky]
        how = f"sticky on {split.sticky}"
        return f"{text}: {how}, so every request with {split.sticky}: {value} goes there"
    if split.sticky:
        return f"{text}: no {split.sticky} header to stick on, so drawn by weight"
    return f"{text}: drawn by weight for each request"


def route_extras(route: Route, decision: Decision) -> list[str]:
    """What else the route does: response headers, timeout, mirror."""
    lines: list[str] = []
    if decision.response_headers:
        edits = describe_edits(decision.response_headers, values=True)
        lines.append(labelled("response:", edits))
    if decision.timeout is not None:
        timeout = f"{decision.timeout:g} s for the response headers, else 504 from the sidecar"
        lines.append(labelled("timeout:", timeout))
    if route.mirror is not None:
        share = f"{route.mirror.destination} ({route.mirror.percent:g}% of requests)"
        if decision.mirror is not None:
            copied = "a copy of this request goes there, its response discarded"
        else:
            copied = "this request is not copied (drawn for each request)"
        lines.append(labelled("mirror:", f"{share}: {copied}"))
    return lines
