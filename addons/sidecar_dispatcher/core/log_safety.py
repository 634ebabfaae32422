"""Make client-controlled text safe to put in a log line.

    logger.info("path %s", printable(flow.request.path))

A header value or path may carry CR, LF or other control characters (obs-fold, raw bytes) that
would start a second, forged log line; and it may be megabytes long.
"""

from __future__ import annotations

MAX_LOGGED = 200  # characters of one client-controlled value; the rest is summarised


def printable(text: str, limit: int = MAX_LOGGED) -> str:
    """`text` with every non-printable character escaped (`\\n`, `\\x1c`) and cut to `limit`."""
    if text.isprintable() and len(text) <= limit:
        return text  # the usual case, without copying
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    if len(text) > limit:
        escaped += f"…(+{len(text) - limit} chars)"
    return escaped
