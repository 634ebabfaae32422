"""Decide where one request goes and which headers change: a pure function of the rule set.

    decision = resolve(rules, request.headers, client_ip="10.0.0.7", path="/x", keep_host=False)

The config's `routes` are tried first, in order (the first whose match holds wins), then the
`rewrites` by the key header's exact value (a dictionary look-up), then `unmatched` if the
config has it, else the default destination. `resolve` reads headers through anything with
`get_all(name)` and `items(multi=True)` (mitmproxy's `Headers`, the router's `HeaderIndex`, or
`HeaderList`) and returns a `Decision` (decision.py): a value the router applies to a flow,
`HeaderList.apply` to a header list (both with header_edits.py), logged and compared in tests.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from typing import Protocol

from .decision import Decision
from .matching import RequestView
from .model import (
    Chooser,
    Destination,
    HeaderEdit,
    HeaderPatch,
    Route,
    RuleSet,
)

FORWARDED_FOR = "X-Forwarded-For"


class HeaderLookup(Protocol):
    def get_all(self, name: str) -> list[str]: ...

    def items(self, multi: bool = ...) -> Iterable[tuple[str, str]]: ...


class AmbiguousRequest(ValueError):
    """The request names more than one rule; guessing could send it to the wrong place."""


def resolve(
    rule_set: RuleSet,
    headers: HeaderLookup,
    *,
    client_ip: str | None,
    path: str,
    keep_host: bool,
    method: str = "GET",
    chooser: Chooser = random.random,
) -> Decision:
    """Pick the route or rule for a request and compute every header the upstream gets."""
    if rule_set.routes:  # the seed's configs have none: their path stays a look-up
        view = RequestView.of(headers.items(multi=True), method, path)
        for route in rule_set.routes:
            if route.match.matches(view):
                return _routed(
                    rule_set,
                    route,
                    view,
                    headers=headers,
                    client_ip=client_ip,
                    path=path,
                    keep_host=keep_host,
                    chooser=chooser,
                )
    rule_name, reason = _select(rule_set, headers)
    rule = rule_set.rewrites[rule_name] if rule_name is not None else None
    if rule is None and rule_set.unmatched is not None:
        return Decision(None, reason, None, path, (), answer=rule_set.unmatched)
    destination = (rule.destination if rule else None) or rule_set.default
    assert destination is not None  # the config reader refuses a rule with nowhere to go
    edits = _forwarding(destination, headers, client_ip, keep_host)
    if rule:
        edits.extend(rule.patches)  # last, so that a Host patch wins
    return Decision(
        rule=rule_name,
        reason=reason,
        destination=destination,
        path=destination.upstream_path(path),
        headers=tuple(edits),
    )


def _routed(
    rule_set: RuleSet,
    route: Route,
    view: RequestView,
    *,
    headers: HeaderLookup,
    client_ip: str | None,
    path: str,
    keep_host: bool,
    chooser: Chooser,
) -> Decision:
    reason = f"route {route.name} matched"
    destination = route.destination or rule_set.default
    index = None
    sticky = False
    if route.split is not None:
        split = route.split
        value = view.headers.get(split.sticky) if split.sticky else None
        sticky = value is not None
        point = (
            stable_hash(value) % split.total if value is not None else int(chooser() * split.total)
        )
        index = split.pick(point)
        destination = split.members[index].destination
        how = f"sticky on {split.sticky}" if sticky else "by weight"
        reason += f", split member {index + 1} of {len(split.members)} ({how})"
    assert destination is not None  # the config reader refuses a route with nowhere to go
    if route.rewrite_prefix is not None and route.match.path is not None:
        path = route.rewrite_prefix + path[len(route.match.path.value) :]
    edits = _forwarding(destination, headers, client_ip, keep_host)
    edits.extend(route.request_headers)  # removals, patches, appends: after Host and XFF
    mirror = None
    if route.mirror is not None and chooser() * 100 < route.mirror.percent:
        mirror = route.mirror.destination
    return Decision(
        rule=route.name,
        reason=reason,
        destination=destination,
        path=destination.upstream_path(path),
        headers=tuple(edits),
        response_headers=route.response_headers,
        timeout=route.timeout,
        mirror=mirror,
        split_member=index,
        split_sticky=sticky,
        by_route=True,
    )


def _forwarding(
    destination: Destination, headers: HeaderLookup, client_ip: str | None, keep_host: bool
) -> list[HeaderEdit]:
    """Host (unless kept) and X-Forwarded-For: what every forwarded request gets first."""
    edits: list[HeaderEdit] = []
    if not keep_host:
        edits.append(HeaderPatch("Host", destination.authority))
    if client_ip:
        edits.append(HeaderPatch(FORWARDED_FOR, forwarded_for(headers, client_ip)))
    return edits


def stable_hash(value: str) -> int:
    """The same number for the same value in every process and run (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


def _select(rule_set: RuleSet, headers: HeaderLookup) -> tuple[str | None, str]:
    key = rule_set.key
    # Only spaces and tabs around a value are optional whitespace (RFC 9110 §5.6.3): a value
    # with any other leading character (NBSP, U+3000, a control) names no rule.
    values = {value.strip(" \t") for value in headers.get_all(key)}
    if not values:
        return None, f"no {key} header"
    if len(values) > 1:
        listed = ", ".join(sorted(repr(value) for value in values))
        raise AmbiguousRequest(f"conflicting {key} headers: {listed}")
    (value,) = values
    if value in rule_set.rewrites:
        return value, f"{key}: {value}"
    return None, f"no rule for {key}: {value}"


def forwarded_for(headers: HeaderLookup, client_ip: str) -> str:
    """The X-Forwarded-For value with the client appended, as the Go version did."""
    if client_ip.startswith("::ffff:") and "." in client_ip:
        client_ip = client_ip.removeprefix("::ffff:")  # an IPv4 client on a dual-stack socket
    existing = [value.strip() for value in headers.get_all(FORWARDED_FOR) if value.strip()]
    return ", ".join([*existing, client_ip])
