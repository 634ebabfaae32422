"""Recorded requests, as their clients sent them: from mitmproxy flow files and HAR files.

    for request in read_requests("traffic.flows"):   # or a .har file
        request.method, request.path, request.headers, request.decision

A flow file holds each request as sent upstream, with the record the router kept of what the
client sent (core/recording.py puts the client's request back together).
A HAR file is recorded on the client side (browser devtools, or a recording proxy in front of the
sidecar): its requests are the clients' own, and carry no decision. HAR files are JSON and are
read whole; flow files are streamed (`_mitmproxy/fixes/flow_file.py`). Nothing here imports
mitmproxy: the flow file reader, which does, is imported only when a flow file is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from ..core.recording import RecordedRequest, RecordingError, without_query


def read_requests(path: str) -> Iterator[RecordedRequest]:
    """Every HTTP request in a flow file or a HAR file, in order; RecordingError on bad input."""
    try:
        with open(path, "rb") as file:
            start = file.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()  # a BOM (Fiddler)
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e.strerror or e}") from None
    if start.startswith(b"{"):
        yield from read_har(path)
        return
    from .._mitmproxy.fixes.flow_file import read_flow_file  # noqa: PLC0415 - flow files only

    yield from read_flow_file(path)


def read_har(path: str) -> Iterator[RecordedRequest]:
    """The requests of a HAR file (Chromium, Firefox, mitmproxy's `save.har` and `hardump`)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        entries = document["log"]["entries"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise RecordingError(f"{path}: not a HAR file ({type(e).__name__}: {e})") from None
    if not isinstance(entries, list):
        raise RecordingError(f"{path}: not a HAR file (log.entries is not a list)")
    for number, entry in enumerate(entries, 1):
        where = f"{path}: entry {number}"
        try:
            request = entry["request"]
            method, url = str(request["method"]), str(request["url"])
            fields = [(str(h["name"]), str(h["value"])) for h in request["headers"]]
        except (KeyError, TypeError) as e:
            raise RecordingError(f"{where}: not a HAR entry (missing {e})") from None
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # HTTP/2 and HTTP/3 pseudo-headers (`:authority`, …) are not header fields.
        headers = tuple((name, value) for name, value in fields if not name.startswith(":"))
        where = f"{where} ({method} {without_query(target)})"
        identity = f"{Path(path).name}#{number}"
        yield RecordedRequest(where, identity, method, target, headers, None, False, None)
