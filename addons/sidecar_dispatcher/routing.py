"""Decide where one request goes and which headers change: a pure function of the rule set.

    decision = resolve(rules, request.headers, client_ip="10.0.0.7", path="/x", keep_host=False)

`resolve` reads headers through anything with `get_all(name)` (mitmproxy's `Headers`, or
`HeaderList` in tools and tests) and returns a `Decision`: a value that can be applied to a
flow or a header list (`apply_headers`), logged, stored in flow metadata and compared in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .rules import Destination, HeaderPatch, RuleSet

FORWARDED_FOR = "X-Forwarded-For"


METADATA_KEY = "dispatcher"  # flow.metadata[METADATA_KEY] holds Decision.as_metadata()
DEFAULT_LABEL = "default"  # how the default destination is named in logs, comments, metrics


def label_for(rule: str | None) -> str:
    """The name a decision goes by: its rule, or "default" when no rule matched."""
    return rule if rule is not None else DEFAULT_LABEL


class HeaderLookup(Protocol):
    def get_all(self, name: str) -> list[str]: ...


class EditableHeaders(Protocol):
    def set(self, name: str, value: str) -> None:
        """Give header `name` exactly this one value, replacing every value it had."""


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
        return label_for(self.rule)

    @property
    def patched_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(header.name for header in self.headers))

    def apply_headers(self, headers: EditableHeaders) -> None:
        """Set the decision's headers in order, so that a later one wins (a Host patch last)."""
        for header in self.headers:
            headers.set(header.name, header.value)

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
    rule_set: RuleSet,
    headers: HeaderLookup,
    *,
    client_ip: str | None,
    path: str,
    keep_host: bool,
) -> Decision:
    """Pick the rule for a request and compute every header the upstream request gets."""
    rule_name, reason = _select(rule_set, headers)
    rule = rule_set.rewrites[rule_name] if rule_name is not None else None
    destination = (rule.destination if rule else None) or rule_set.default

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


def _select(rule_set: RuleSet, headers: HeaderLookup) -> tuple[str | None, str]:
    key = rule_set.key
    values = {value.strip() for value in headers.get_all(key)}
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
