"""What became of one request, read off a finished flow: the facts metrics and access logs share.

    outcome = Outcome.of(flow)        # in the `response` or `error` hook
    outcome.rule, outcome.status, outcome.duration_seconds, outcome.upstream_error_kind

A request the router refused before choosing a rule (conflicting key headers, a dispatch that
failed) is labelled rule `refused`, destination `none`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .flow_decision import decision_of

if TYPE_CHECKING:
    from mitmproxy import http

REFUSED = "refused"
NO_DESTINATION = "none"
# nginx's convention for "the client closed the connection before it got an answer".
CLIENT_CLOSED_STATUS = 499
# What mitmproxy answers when the destination fails (ErrorCode.CONNECT_FAILED and the other
# server-side errors of its HTTP layer all map to 502 Bad Gateway).
UPSTREAM_FAILED_STATUS = 502
# What the sidecar answers when the destination sent no response headers in time
# (proxy/timeouts.py), which then sets flow.metadata[TIMED_OUT_KEY] to the seconds it waited.
UPSTREAM_TIMEOUT_STATUS = 504
TIMED_OUT_KEY = "dispatcher_timed_out"
TIMEOUT_KIND = "timeout"

# mitmproxy reports an upstream failure as text; these fragments map it to a short, stable kind.
# Checked in order; anything else is "other".
_UPSTREAM_ERROR_KINDS = (
    ("connect_refused", ("connect call failed", "connection refused", "errno 111")),
    ("tls", ("tls", "ssl", "certificate")),
    (TIMEOUT_KIND, ("timed out", "timeout")),
    (
        "dns",
        ("name or service not known", "getaddrinfo", "no address associated", "name resolution"),
    ),
    ("reset", ("reset", "server closed connection", "broken pipe", "unexpected server response")),
    ("protocol", ("cannot parse http response", "from server, refusing")),
)
# mitmproxy's messages when it refuses a client's request itself (request smuggling shapes,
# a bad scheme, a body over body_size_limit), and the status its answer has.
_REFUSED_BY_MITMPROXY = (
    ("from client, refusing", 400),
    ("invalid request scheme", 400),
    ("request body exceeds", 413),
)
# mitmproxy's messages for a client that went away (HTTP/1, HTTP/2, a killed flow).
_CLIENT_GONE = ("client disconnected", "stream reset by client", "killed")


def upstream_error_kind(message: str) -> str:
    """`connect_refused`, `tls`, `timeout`, `dns`, `reset`, `protocol` or `other`."""
    lowered = message.lower()
    for kind, fragments in _UPSTREAM_ERROR_KINDS:
        if any(fragment in lowered for fragment in fragments):
            return kind
    return "other"


def refused_by_mitmproxy(message: str) -> int | None:
    """The status mitmproxy answered with, when it refused the client's request; else None."""
    lowered = message.lower()
    for fragment, status in _REFUSED_BY_MITMPROXY:
        if fragment in lowered:
            return status
    return None


def client_went_away(message: str) -> bool:
    lowered = message.lower()
    return any(fragment in lowered for fragment in _CLIENT_GONE)


@dataclass(frozen=True, slots=True)
class Outcome:
    rule: str  # the rule's name, "default", or "refused"
    destination: str  # the destination URL from the config, or "none"
    method: str
    path: str  # without the query string: it may carry tokens
    status: int  # what the client got; 499 when it left before an answer
    duration_seconds: float  # from request headers received to response complete
    client: str  # the client's address
    upstream_error: str | None  # mitmproxy's message when the destination failed, or the timeout
    upstream_error_kind: str | None

    @property
    def answered(self) -> bool:
        return self.status != CLIENT_CLOSED_STATUS

    @classmethod
    def of(cls, flow: http.HTTPFlow) -> Outcome:
        decision = decision_of(flow)
        if decision:
            rule = decision.label
            destination = decision.destination.url if decision.destination else NO_DESTINATION
        else:
            rule, destination = REFUSED, NO_DESTINATION
        error = flow.error.msg if flow.error else None
        upstream_error = kind = None
        if flow.response is not None:
            status = flow.response.status_code
            finished = flow.response.timestamp_end or time.time()
            if (waited := flow.metadata.get(TIMED_OUT_KEY)) is not None:
                upstream_error = f"no response headers within {waited:g} s"
                kind = TIMEOUT_KIND
        else:
            finished = time.time()
            if error is not None and client_went_away(error):
                status = CLIENT_CLOSED_STATUS
            elif error is not None and (refused := refused_by_mitmproxy(error)) is not None:
                status = refused
            else:
                status = UPSTREAM_FAILED_STATUS
                upstream_error = error or "no response"
                kind = upstream_error_kind(upstream_error)
        peer = flow.client_conn.peername
        return cls(
            rule=rule,
            destination=destination,
            method=flow.request.method,
            path=flow.request.path.partition("?")[0],
            status=status,
            duration_seconds=max(0.0, finished - flow.request.timestamp_start),
            client=peer[0] if peer else "",
            upstream_error=upstream_error,
            upstream_error_kind=kind,
        )
