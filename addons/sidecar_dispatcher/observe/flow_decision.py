"""The router's decision for a flow, handed to the addons that act on it later.

    keep_decision(flow, decision, client_request=record)   # the router, once per request
    decision = decision_of(flow)     # the mirror, the timeouts, the access log, metrics, errors

The addons read the typed `Decision` itself; `flow.metadata[METADATA_KEY]` gets its
`as_metadata()` view only for what reads flows from outside: mitmweb shows it, a flow file keeps
it, and `diff` reads it back (core/recording.py). The decisions are held weakly: one goes with
its flow. A flow without one was not dispatched by this process: refused, answered before the
router, or a replay or copy of an earlier flow (a copy carries the view, not the decision).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from mitmproxy import http

from ..core.decision import METADATA_KEY, Decision
from ..core.recording import CLIENT_REQUEST_KEY

_decisions: WeakKeyDictionary[http.HTTPFlow, Decision] = WeakKeyDictionary()


def keep_decision(
    flow: http.HTTPFlow, decision: Decision, *, client_request: dict[str, object] | None = None
) -> None:
    """Keep the decision with the flow, and its view (with the client's request, for `diff`)."""
    _decisions[flow] = decision
    view = decision.as_metadata()
    if client_request is not None:
        view[CLIENT_REQUEST_KEY] = client_request
    flow.metadata[METADATA_KEY] = view


def decision_of(flow: http.HTTPFlow) -> Decision | None:
    """The decision the router made for this flow; None when it made none."""
    return _decisions.get(flow)
