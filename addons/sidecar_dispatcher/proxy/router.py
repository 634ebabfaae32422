"""Send each request where the rules say: resolve it, apply the `Decision` to the flow, record it.

    Router(live_config).requestheaders(flow)   # as mitmproxy calls it, before any upstream I/O

Dispatch happens in `requestheaders`, before mitmproxy opens the upstream connection, so it is
also right when request bodies are streamed. It fails closed: whatever goes wrong answers the
client from the sidecar, and never lets the request carry on to the reverse-mode target.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence

from mitmproxy import ctx, http

from ..core.decision import Decision
from ..core.header_edits import HeaderIndex, edited_fields
from ..core.log_safety import printable
from ..core.model import HeaderAppend, HeaderPatch, HeaderRemoval
from ..core.recording import client_request_record
from ..core.resolve import AmbiguousRequest, resolve
from ..observe.flow_decision import decision_of, keep_decision
from ..observe.outcome import refused_by_mitmproxy
from .live_config import LiveConfig

logger = logging.getLogger(__name__)

DISPATCHED_MARKER = ":twisted_rightwards_arrows:"  # 🔀 in mitmweb's flow list


class Router:
    """Dispatches each live request by the rules `live_config` holds at that moment."""

    name = "dispatcher-router"

    def __init__(self, live_config: LiveConfig) -> None:
        self.live_config = live_config
        self.keep_host_header = False  # mitmproxy's option, mirrored here off the request path
        # What the client sent, kept with the decision for `diff` (tools/recorded.py). The runner
        # turns it off when it does not record flows: nothing else there can read it.
        self.keeps_client_request = True

    def configure(self, updated: set[str]) -> None:
        if "keep_host_header" in updated:
            self.keep_host_header = ctx.options.keep_host_header

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay:
            return
        try:
            self._dispatch(flow)
        except AmbiguousRequest as e:
            logger.warning(
                "refused %s %s: %s",
                printable(flow.request.method),
                printable(flow.request.path.partition("?")[0]),
                printable(str(e)),
            )
            flow.response = error_response(400, f"sidecar dispatcher: {e}", flow.request.method)
        except Exception as e:  # fail closed: never let the request reach the wrong upstream
            logger.error(
                "dispatch failed for %s %s:\n%s",
                printable(flow.request.method),
                printable(flow.request.path.partition("?")[0]),
                traceback.format_exc(),
            )
            # The client learns what kind of failure, the log has the rest (it may name
            # internal addresses or values).
            reason = f"sidecar dispatcher: dispatch failed ({type(e).__name__}; see the log)"
            flow.response = error_response(502, reason, flow.request.method)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        if decision and flow.response is not None and decision.response_headers:
            apply_response_headers(flow.response, decision.response_headers)

    def error(self, flow: http.HTTPFlow) -> None:
        decision = decision_of(flow)
        if decision and flow.error:
            # mitmproxy's message may quote what the destination sent: escaped and cut too.
            message = printable(flow.error.msg)
            logger.warning("%s → %s failed: %s", decision.label, decision.destination, message)
        elif flow.error and (status := refused_by_mitmproxy(flow.error.msg)) is not None:
            # mitmproxy refused the request itself (before a rule): one line, as the router's own
            logger.warning(
                "refused %s %s: mitmproxy: %s (%d)",
                printable(flow.request.method),
                printable(flow.request.path.partition("?")[0]),
                printable(flow.error.msg),
                status,
            )

    def _dispatch(self, flow: http.HTTPFlow) -> None:
        rules = self.live_config.rules
        if rules is None:
            raise RuntimeError("the dispatcher has no configuration loaded")
        request = flow.request
        headers = HeaderIndex(request.headers.fields)  # read once for every look-up below
        decision = resolve(
            rules,
            headers,
            client_ip=flow.client_conn.peername[0] if flow.client_conn.peername else None,
            path=request.path,
            keep_host=self.keep_host_header,
            method=request.method,
        )
        # Before the edits: what they overwrite, so that `diff` can rebuild the client's request.
        client_request = (
            client_request_record(decision, request.path, headers, keep_host=self.keep_host_header)
            if self.keeps_client_request
            else None
        )
        if decision.answer is not None:  # `unmatched`: the sidecar answers, nothing is sent
            flow.response = error_response(
                decision.answer.status, decision.answer.body, request.method
            )
        else:
            apply_decision(request, decision, keep_host=self.keep_host_header)
        record(flow, decision, client_request)


def apply_decision(request: http.Request, decision: Decision, *, keep_host: bool) -> None:
    """Point the request at the decision's destination and set its headers.

    Host and port are set without mitmproxy's rewrite of the Host header and authority that
    `request.host = ...` does (twice, with the port): the decision's Host patch sets them
    (`host_header`: also `:authority` for HTTP/2), or, with `keep_host`, the client's stay.
    """
    destination = decision.destination
    assert destination is not None, "a decision answered by the sidecar is not forwarded"
    request.scheme = destination.scheme
    request.data.host = destination.host
    request.data.port = destination.port
    request.path = decision.path
    host = None
    edits = []
    for edit in decision.headers:
        if isinstance(edit, HeaderPatch) and edit.name.lower() == "host":
            host = edit.value  # the config refuses appending or removing Host
        else:
            edits.append(edit)
    if host is not None:
        request.host_header = host
    if edits:
        request.headers.fields = edited_fields(request.headers.fields, edits)
    if not (request.is_http2 or request.is_http3):
        # An absolute-form request (`GET http://app/x`, a client using the sidecar as its
        # http_proxy) would go upstream in absolute form, naming the destination's address while
        # Host names the patched host; an upstream follows the request line (RFC 9112 §3.2.2).
        # Origin form, always: mitmproxy writes it when the request has no authority.
        request.authority = ""


def record(
    flow: http.HTTPFlow, decision: Decision, client_request: dict[str, object] | None = None
) -> None:
    """Keep the decision with the flow (for later addons; its view, comment and marker for
    mitmweb). The access log writes the request's line when it completes; DEBUG shows the
    values set."""
    keep_decision(flow, decision, client_request=client_request)
    flow.comment = decision.describe()
    if decision.dispatched:
        flow.marked = DISPATCHED_MARKER
    if logger.isEnabledFor(logging.DEBUG):
        for edit in decision.headers:
            if isinstance(edit, HeaderRemoval):
                logger.debug("%s → remove %s", decision.label, edit.name)
            else:
                verb = "add" if isinstance(edit, HeaderAppend) else "set"
                logger.debug("%s → %s %s: %s", decision.label, verb, edit.name, edit.value)


def apply_response_headers(
    response: http.Response, edits: Sequence[HeaderPatch | HeaderRemoval]
) -> None:
    """The route's `response` edits, in order, before the response reaches the client."""
    for edit in edits:
        if isinstance(edit, HeaderPatch):
            response.headers[edit.name] = edit.value
        else:
            response.headers.pop(edit.name, None)


def error_response(status: int, text: str, method: str = "GET") -> http.Response:
    """The sidecar's own answer: plain text, so that it is never mistaken for the upstream's.

    To a HEAD request without the body (RFC 9110 §9.3.2): one would be read as the start of the
    next response on a kept-alive connection.
    """
    body = text if not text or text.endswith("\n") else text + "\n"
    answer = http.Response.make(status, body, {"Content-Type": "text/plain; charset=utf-8"})
    if method.upper() == "HEAD":
        answer.content = b""
    return answer
