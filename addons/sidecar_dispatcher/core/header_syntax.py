"""What makes a header name or value acceptable (RFC 9110), as pure checks."""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: a field name is a "token".
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Control characters other than horizontal tab may not appear in a field value (§5.5).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_CONTROL_NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\x00": "a NUL byte"}

# Setting these from a config would desynchronise the message framing mitmproxy writes.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


def header_name_problem(name: str) -> str | None:
    """Why `name` cannot be a header name, or None when it can."""
    if not name:
        return "expected a header name, got an empty string"
    if not _TOKEN.fullmatch(name):
        return (
            f"{name!r} is not a valid header name "
            "(letters, digits and !#$%&'*+-.^_`|~ only, no spaces or colons)"
        )
    return None


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a header value, or None when it can."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    char = found.group()
    what = _CONTROL_NAMES.get(char, f"the control character {char!r}")
    return (
        f"header value contains {what} at offset {found.start()}; CR, LF, NUL and other "
        "control characters are refused because they would inject headers"
    )
