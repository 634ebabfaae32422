"""What a route matches: header, path and method conditions, read off a `RequestView`.

    match = Match(headers=(HeaderCondition.exact("x-user", "alice"),))
    match.matches(RequestView.of(headers, method="GET", path="/api/x"))   # True or False

Every value here is immutable and built once, when the config is read; regexes are compiled
then with RE2 (linear time, whatever a client sends). Nothing here imports mitmproxy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import re2

# RE2 reports a bad pattern by raising; without this it also prints it on standard error.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


class Pattern(Protocol):
    def fullmatch(self, text: str) -> object | None: ...

    def search(self, text: str) -> object | None: ...


def compile_regex(pattern: str) -> Pattern:
    """An RE2 pattern; ValueError with RE2's reason when it is not one (e.g. a backreference)."""
    try:
        compiled: Pattern = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"{pattern!r} is not an RE2 regular expression: {reason}") from None
    return compiled


# --- what a route matches


@dataclass(frozen=True, slots=True)
class RequestView:
    """What matching reads of a request: headers by lowercase name, method, path without query.

    Several fields of one name are read as one value joined with ", " (RFC 9110 §5.3), their
    surrounding spaces and tabs trimmed (RFC 9110 §5.5 OWS).
    """

    headers: dict[str, str]
    method: str
    path: str

    @classmethod
    def of(cls, fields: Iterable[tuple[str, str]], method: str, path: str) -> RequestView:
        combined: dict[str, list[str]] = {}
        for name, value in fields:
            combined.setdefault(name.lower(), []).append(value.strip(" \t"))
        headers = {name: ", ".join(values) for name, values in combined.items()}
        return cls(headers, method.upper(), path.partition("?")[0])


@dataclass(frozen=True, slots=True)
class HeaderCondition:
    """One header's condition: `kind` is exact, one_of, prefix, regex or present."""

    name: str  # lowercase
    kind: str
    values: tuple[str, ...] = ()  # exact and one_of: the values; prefix and regex: one
    present: bool = True  # for kind "present": whether the header must be there
    regex: Pattern | None = field(default=None, compare=False, repr=False)
    # The test of the header's value (None when absent), chosen once: a route table of a
    # hundred conditions is tried on every request.
    test: Callable[[str | None], bool] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", self._choose_test())

    def _choose_test(self) -> Callable[[str | None], bool]:
        if self.kind == "present":
            wanted = self.present
            return lambda value: (value is not None) is wanted
        if self.kind in ("exact", "one_of"):
            values = frozenset(self.values)
            return lambda value: value in values
        if self.kind == "prefix":
            prefix = self.values[0]
            return lambda value: value is not None and value.startswith(prefix)
        assert self.regex is not None
        fullmatch = self.regex.fullmatch
        return lambda value: value is not None and fullmatch(value) is not None

    def holds(self, headers: dict[str, str]) -> bool:
        return self.test(headers.get(self.name))

    def describe(self) -> str:
        if self.kind == "present":
            return f"{self.name} {'present' if self.present else 'absent'}"
        if self.kind == "one_of":
            return f"{self.name} one of {', '.join(map(repr, self.values))}"
        return f"{self.name} {self.kind} {self.values[0]!r}"


@dataclass(frozen=True, slots=True)
class PathCondition:
    """`exact`, `prefix`, or `regex` (searched: anchor it with ^ and $), on the path alone."""

    kind: str
    value: str
    regex: Pattern | None = field(default=None, compare=False, repr=False)

    def holds(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            return path.startswith(self.value)
        assert self.regex is not None
        return self.regex.search(path) is not None

    def describe(self) -> str:
        return f"path {self.kind} {self.value!r}"


@dataclass(frozen=True, slots=True)
class Match:
    """Every condition must hold; no conditions match every request."""

    headers: tuple[HeaderCondition, ...] = ()
    path: PathCondition | None = None
    methods: frozenset[str] | None = None

    def matches(self, request: RequestView) -> bool:
        if self.methods is not None and request.method not in self.methods:
            return False
        if self.path is not None and not self.path.holds(request.path):
            return False
        headers = request.headers
        for condition in self.headers:  # noqa: SIM110 - a loop, not all(): no generator per route
            if not condition.test(headers.get(condition.name)):
                return False
        return True

    def mismatches(self, request: RequestView) -> list[str]:
        """Each condition that does not hold, in words (for `explain --verbose`)."""
        failed = []
        if self.methods is not None and request.method not in self.methods:
            failed.append(f"method {request.method} not in {', '.join(sorted(self.methods))}")
        if self.path is not None and not self.path.holds(request.path):
            failed.append(f"{self.path.describe()} does not match {request.path!r}")
        for condition in self.headers:
            if not condition.holds(request.headers):
                failed.append(f"{condition.describe()} does not hold")
        return failed
