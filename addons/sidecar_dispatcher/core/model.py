"""The immutable rule set a config file turns into: rules, routes, destinations, header edits.

    rules = RuleSet(key="environment", default=Destination("http", "app", 8080), rewrites={})

Nothing here imports mitmproxy: these values are built by `config.load.parse_config`, read by
`core.resolve.resolve`, and can be printed, compared and tested on their own. A route's `match`
is a `core.matching.Match`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .matching import Match


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a request goes: scheme, host, port and an optional base path."""

    scheme: str
    host: str
    port: int
    base_path: str = ""  # "" or "/base" — never a trailing slash
    # Computed once: every request reads them (the Host patch, logs, metrics labels).
    authority: str = field(init=False, repr=False, compare=False)  # the Host header value
    url: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        # The port only when it is not the scheme's default.
        authority = host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"
        object.__setattr__(self, "authority", authority)
        object.__setattr__(self, "url", f"{self.scheme}://{authority}{self.base_path}")

    def upstream_path(self, path: str) -> str:
        """Prefix the request path with the base path: `/base` + `/x?q=1` → `/base/x?q=1`.

        Only origin-form paths (starting with "/") are prefixed; `OPTIONS *` keeps its `*`.
        """
        if not self.base_path or not path.startswith("/"):
            return path
        return self.base_path + path

    def __str__(self) -> str:
        return self.url


DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HeaderPatch:
    """Set header `name` to `value`, replacing any value the request had."""

    name: str
    value: str


# --- header edits beyond `patch` (HeaderPatch, above, sets a header)


@dataclass(frozen=True, slots=True)
class HeaderAppend:
    """Add a value to header `name`, keeping the values it has."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class HeaderRemoval:
    """Drop every value of header `name`."""

    name: str


HeaderEdit = HeaderPatch | HeaderAppend | HeaderRemoval


# --- where a route sends


@dataclass(frozen=True, slots=True)
class SplitMember:
    destination: Destination
    weight: int  # a positive integer


@dataclass(frozen=True, slots=True)
class Split:
    """A weighted choice of destinations; with `sticky`, one header's value always picks the
    same member (and values spread over members by weight)."""

    members: tuple[SplitMember, ...]
    sticky: str | None = None  # lowercase header name

    @property
    def total(self) -> int:
        return sum(member.weight for member in self.members)

    def pick(self, point: int) -> int:
        """The member whose share of [0, total) holds `point`."""
        for index, member in enumerate(self.members):
            if point < member.weight:
                return index
            point -= member.weight
        return len(self.members) - 1


@dataclass(frozen=True, slots=True)
class Mirror:
    destination: Destination
    percent: float  # of the route's requests copied, 0 < percent <= 100


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: Match = field(default_factory=Match)  # Match() holds for every request
    destination: Destination | None = None  # None and no split: the default destination
    split: Split | None = None
    request_headers: tuple[HeaderEdit, ...] = ()  # removals, then patches, then appends
    response_headers: tuple[HeaderPatch | HeaderRemoval, ...] = ()
    rewrite_prefix: str | None = None  # replaces match.path's prefix
    timeout: float | None = None  # seconds until the response headers must arrive
    mirror: Mirror | None = None


@dataclass(frozen=True, slots=True)
class Unmatched:
    """The sidecar's own answer to a request no route or rewrite matched."""

    status: int = 404
    body: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    """What to do with a request whose key header has the value `name`."""

    name: str
    patches: tuple[HeaderPatch, ...]
    destination: Destination | None  # None: use the rule set's default destination


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A whole config: routes in order, rules by key header value, then the default.

    `default` is None only when `unmatched` says what to answer instead.
    """

    key: str
    default: Destination | None
    rewrites: Mapping[str, Rule]  # the config's `rewrites`, read-only, by key header value
    routes: tuple[Route, ...] = ()  # the config's `routes`, checked first, in order
    unmatched: Unmatched | None = None

    @property
    def rule_count(self) -> int:
        return len(self.routes) + len(self.rewrites)

    def summary(self) -> str:
        names = ", ".join([*(route.name for route in self.routes), *self.rewrites]) or "none"
        default = self.default if self.default is not None else "unmatched"
        return f"key={self.key} default={default} rules=[{names}]"


Chooser = Callable[[], float]  # a number in [0, 1): random.random, or a fixed one in tests
