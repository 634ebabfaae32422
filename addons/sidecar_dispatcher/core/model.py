"""The immutable rule set a config file turns into.

Nothing here imports mitmproxy: these values are built by `config.parse_config`,
read by `routing.resolve`, and can be printed, compared and tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .matching import Route, Unmatched


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a request goes: scheme, host, port and an optional base path."""

    scheme: str
    host: str
    port: int
    base_path: str = ""  # "" or "/base" — never a trailing slash

    @property
    def authority(self) -> str:
        """The Host header value for this destination (port only when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"

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
