"""How a reach into mitmproxy is checked: what it relies on, still there and shaped the same.

Reach("HttpLayer._handle_event (wrapped)", check)   # check(master) -> problem or None
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import master


class Shortcut(enum.StrEnum):
    """A speed-only shortcut of the runner's; without it the runner takes mitmproxy's own path."""

    FAST_HOOKS = "fast hook path"
    HEADER_LOOKUPS = "header look-ups"
    FLOW_IDS = "pooled flow ids"
    TERMINAL_LINES = "direct terminal lines"


@dataclass(frozen=True)
class Reach:
    """One internal relied on: what it is, and a check returning what is wrong, or None."""

    name: str
    check: Callable[[master.Master], str | None]
    for_timeouts: bool = False  # UpstreamTimeouts checks it itself, under mitmdump too
    # The speed-only shortcut it serves: a failed check costs that shortcut, not the start.
    # None: correctness depends on it, and a failed check stops the runner.
    shortcut: Shortcut | None = None


_STOCK = "_dispatcher_wraps"  # on a wrapper: the stock method it wraps


def stock_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """mitmproxy's own method under a wrapper of answer_overdue_flows(), or `method`."""
    stock: Callable[..., Any] = getattr(method, _STOCK, method)
    return stock


def compact(text: str) -> str:
    return "".join(text.split())


def source_lacks(function: object, fragments: tuple[str, ...]) -> str | None:
    """The first of `fragments` (in order, whitespace ignored) not in the function's source."""
    try:
        source = compact(inspect.getsource(function))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return f"the source of {getattr(function, '__qualname__', function)} cannot be read"
    position = 0
    for fragment in fragments:
        found = source.find(compact(fragment), position)
        if found < 0:
            name = getattr(function, "__qualname__", function)
            return f"{name} no longer has `{fragment}`"
        position = found + len(compact(fragment))
    return None


def sources_lack(table: tuple[tuple[object, str, tuple[str, ...]], ...]) -> str | None:
    """`source_lacks` over (owner, attribute, fragments) rows, the attribute looked up now (so
    that a replaced one is read, not the one seen at import); the first problem, or None."""
    for owner, name, fragments in table:
        if (problem := source_lacks(getattr(owner, name), fragments)) is not None:
            return problem
    return None


def first_problem(*problems: Callable[[], str | None]) -> str | None:
    for problem in problems:
        if (found := problem()) is not None:
            return found
    return None


def check_wrappable(cls: type, name: str, parameters: list[str]) -> str | None:
    """The method is mitmproxy's own (or our wrapper of it), with these parameters."""
    current = getattr(cls, name, None)
    if current is None:
        return f"{cls.__name__} has no {name}() method"
    stock = stock_method(current)
    if stock.__qualname__ != f"{cls.__name__}.{name}":
        return f"{cls.__name__}.{name} is already replaced (or mitmproxy moved it)"
    if list(inspect.signature(stock).parameters) != parameters:
        return f"{cls.__name__}.{name}{inspect.signature(stock)} is not ({', '.join(parameters)})"
    if not inspect.isgeneratorfunction(inspect.unwrap(stock)):
        return f"{cls.__name__}.{name} is no longer a generator of commands"
    return None
