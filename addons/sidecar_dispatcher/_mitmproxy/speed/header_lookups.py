"""Header look-ups without an exception per absent name: mitmproxy's `Headers`, in the runner.

    faster_header_lookups()   # once per process; the lean runner only

`Headers.get(name)` and `name in headers` are `collections.abc.Mapping`'s: each calls
`headers[name]`, which builds the list of values, raises KeyError when it is empty and catches
it again. mitmproxy's HTTP/1 layer asks for absent names (transfer-encoding, connection, ...)
several times for each request and response: about 9 % of the runner's samples
(bench/results/profile.md). The replacements scan the fields once with the conversions
mitmproxy's own path makes (a str name encoded utf-8/surrogateescape, names compared lowercased,
values decoded the same way and folded with ", ") and return what Mapping's would; a name of
another type takes Mapping's path (and its TypeError).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mitmproxy import http
from mitmproxy.coretypes import multidict

from ..checking import Reach, Shortcut, first_problem, sources_lack

_STOCK_GET = Mapping.get
_STOCK_CONTAINS = Mapping.__contains__


def _field_name(key: object) -> bytes | None:
    """A name as the fields hold it, lowercased, as get_all converts it; None for another type."""
    if type(key) is str:
        return key.encode("utf-8", "surrogateescape").lower()
    if type(key) is bytes:
        return key.lower()
    return None


def get(self: http.Headers, key: Any, default: Any = None) -> Any:
    name = _field_name(key)
    if name is None:
        return _STOCK_GET(self, key, default)
    values = [value for field, value in self.fields if field.lower() == name]
    if not values:
        return default
    return ", ".join([value.decode("utf-8", "surrogateescape") for value in values])


def contains(self: http.Headers, key: object) -> bool:
    name = _field_name(key)
    if name is None:
        return _STOCK_CONTAINS(self, key)
    for field, _value in self.fields:  # noqa: SIM110  # a loop: no generator per call
        if field.lower() == name:
            return True
    return False


def faster_header_lookups() -> None:
    """Give `Headers` its own `get` and `__contains__` (once in a process)."""
    http.Headers.get = get  # type: ignore[method-assign,assignment]
    http.Headers.__contains__ = contains  # type: ignore[method-assign,assignment]


def installed() -> bool:
    return http.Headers.__dict__.get("get") is get


# What the replacements reproduce: Mapping's get/__contains__ over `self[key]`, which is
# _MultiDict.__getitem__ over Headers.get_all (bytes name, lowercased; values decoded, folded).
STOCK_PATH = (
    (
        http.Headers,
        "get_all",
        ("name = _always_bytes(name)", "_native(x) for x in super().get_all(name)"),
    ),
    (multidict._MultiDict, "get_all", ("key = self._kconv(key)", "self._kconv(k) == key")),
    (
        multidict._MultiDict,
        "__getitem__",
        ("values = self.get_all(key)", "raise KeyError(key)", "return self._reduce_values(values)"),
    ),
)


def _lowercased(name: bytes) -> object:
    converted: object = http.Headers._kconv(name)  # annotated str, given bytes by get_all
    return converted


def _check_stock_path(_lean: object = None) -> str | None:
    for name, ours, stock in (
        ("get", get, _STOCK_GET),
        ("__contains__", contains, _STOCK_CONTAINS),
    ):
        own = http.Headers.__dict__.get(name)
        if own is not None and own not in (ours, stock):
            return f"Headers has its own {name}() now; the runner would replace it"
        for base in http.Headers.__mro__[1:]:
            if name in base.__dict__:
                if base.__dict__[name] is not stock:
                    return f"{base.__qualname__}.{name} is no longer collections.abc.Mapping's"
                break
    return first_problem(
        lambda: None if _lowercased(b"A-b") == b"a-b" else "Headers._kconv() changed",
        lambda: (
            None if http.Headers._reduce_values(["a", "b"]) == "a, b" else "Headers folding changed"
        ),
        lambda: sources_lack(STOCK_PATH),
    )


HEADER_LOOKUP_REACHES = (
    Reach(
        "Headers.get / __contains__ (replaced: one scan, no KeyError)",
        _check_stock_path,
        shortcut=Shortcut.HEADER_LOOKUPS,
    ),
)
