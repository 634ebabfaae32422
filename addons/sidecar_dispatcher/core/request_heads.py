"""How long a request's head may be, in bytes: the pure rules, no I/O and no mitmproxy.

    problem = head_problem(buffered_bytes, RequestHeadLimits())   # None, or (status, reason)

mitmproxy's HTTP/1 reader keeps reading a request head until it ends, without a bound: a client
sending a 40 MB header line that never ends holds 40 MB (and more) of the sidecar's memory. The
limits follow nginx's defaults (`large_client_header_buffers 4 8k`): a request line (the URL)
of at most 8 KiB → else 414, a header line of at most 8 KiB and a head of at most 32 KiB →
else 431 (RFC 6585 §5).
"""

from __future__ import annotations

from dataclasses import dataclass

URI_TOO_LONG = 414
HEADERS_TOO_LARGE = 431


@dataclass(frozen=True, slots=True)
class RequestHeadLimits:
    request_line: int = 8192
    header_line: int = 8192
    head: int = 32768


def head_problem(data: bytes, limits: RequestHeadLimits) -> tuple[int, str] | None:
    """What is wrong with a request head, complete or still arriving, or None."""
    ends = [found for found in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if found >= 0]
    head = data[: min(ends)] if ends else data  # a body that follows is not the head
    if len(head) > limits.head:
        return HEADERS_TOO_LARGE, f"request head over {limits.head} bytes"
    lines = head.split(b"\n")
    if len(lines[0]) > limits.request_line:
        return URI_TOO_LONG, f"request line over {limits.request_line} bytes"
    for line in lines[1:]:
        if len(line) > limits.header_line:
            return HEADERS_TOO_LARGE, f"a header line over {limits.header_line} bytes"
    return None
