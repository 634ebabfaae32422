"""Decide where one request goes and which headers change: a pure function of the rule set.

    decision = resolve(rules, request.headers, client_ip="10.0.0.7", path="/x", keep_host=False)

`resolve` reads headers through anything with `get_all(name)` (mitmproxy's `Headers`, or a
small stand-in in tests and tools) and returns a `Decision`: a value that can be applied to a
flow, logged, stored in flow metadata and compared in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .rules import Destination, HeaderPatch, RuleSet

FORWARDED_FOR = "X-Forwarded-For"


class HeaderLookup(Protocol):
    def get_all(self, name: str) -> list[str]: ...


class AmbiguousRequest(ValueError):
    """The request names more than one rule; guessing could send it to the wrong place."""


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str | None  # None: the default destination
    reason: str
    destination: Destination
    path: str  # the path (and query) sent upstream
    headers: tuple[HeaderPatch, ...]  # set in this order; a later one wins

    @property
    def dispatched(self) -> bool:
        return self.rule is not None

    @property
    def label(self) -> str:
        return self.rule if self.rule is not None else "default"

    @property
    def patched_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(header.name for header in self.headers))

    def describe(self) -> str:
        """The flow comment shown in mitmweb: `dev → http://example.com`."""
        return f"{self.label} → {self.destination}"

    def as_metadata(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "reason": self.reason,
            "destination": self.destination.url,
            "path": self.path,
            "headers_set": {header.name: header.value for header in self.headers},
        }


def resolve(
    rules: RuleSet,
    headers: HeaderLookup,
    *,
    client_ip: str | None,
    path: str,
    keep_host: bool,
) -> Decision:
    """Pick the rule for a request and compute every header the upstream request gets."""
    rule_name, reason = _select(rules, headers)
    rule = rules.rules[rule_name] if rule_name is not None else None
    destination = (rule.destination if rule else None) or rules.default

    updates: list[HeaderPatch] = []
    if not keep_host:
        updates.append(HeaderPatch("Host", destination.authority))
    if client_ip:
        updates.append(HeaderPatch(FORWARDED_FOR, forwarded_for(headers, client_ip)))
    if rule:
        updates.extend(rule.patches)  # last, so that a Host patch wins
    return Decision(
        rule=rule_name,
        reason=reason,
        destination=destination,
        path=destination.upstream_path(path),
        headers=tuple(updates),
    )


def _select(rules: RuleSet, headers: HeaderLookup) -> tuple[str | None, str]:
    values = {value.strip() for value in headers.get_all(rules.key)}
    if not values:
        return None, f"no {rules.key} header"
    if len(values) > 1:
        listed = ", ".join(sorted(repr(value) for value in values))
        raise AmbiguousRequest(f"conflicting {rules.key} headers: {listed}")
    (value,) = values
    if value in rules.rules:
        return value, f"{rules.key}: {value}"
    return None, f"no rule for {rules.key}: {value}"


def forwarded_for(headers: HeaderLookup, client_ip: str) -> str:
    """The X-Forwarded-For value with the client appended, as the Go version did."""
    if client_ip.startswith("::ffff:") and "." in client_ip:
        client_ip = client_ip.removeprefix("::ffff:")  # an IPv4 client on a dual-stack socket
    existing = [value.strip() for value in headers.get_all(FORWARDED_FOR) if value.strip()]
    return ", ".join([*existing, client_ip])
