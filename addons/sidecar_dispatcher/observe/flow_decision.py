"""The router's decision for a flow, handed to the addons that act on it later.

    keep_decision(flow, decision, client_request=record)   # the router, once per request
    decision = decision_of(flow)     # the mirror, the timeouts, the access log, metrics, errors

The addons read the typed `Decision` itself. What mitmweb shows, a flow file keeps and `diff`
reads back (core/recording.py) is its `as_metadata()` view in `flow.metadata[METADATA_KEY]`: a
dict, written as one by mitmproxy's flow writer. The view carries the decision it was made from
as an attribute, which no serializer sees, so that reading it costs one look-up (a table of
flows would cost a weak reference per request). A flow read from a file has the view alone; a
copy made in the process (a replay) has both. A flow without either was not dispatched: refused,
or answered before the router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.decision import METADATA_KEY, Decision
from ..core.recording import CLIENT_REQUEST_KEY

if TYPE_CHECKING:
    from mitmproxy import http


class DecisionView(dict[str, object]):
    """`Decision.as_metadata()`, with the decision itself in `decision`."""

    __slots__ = ("decision",)

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.as_metadata())
        self.decision = decision


def keep_decision(
    flow: http.HTTPFlow, decision: Decision, *, client_request: dict[str, object] | None = None
) -> None:
    """Keep the decision with the flow, in its view (with the client's request, for `diff`)."""
    view = DecisionView(decision)
    if client_request is not None:
        view[CLIENT_REQUEST_KEY] = client_request
    flow.metadata[METADATA_KEY] = view


def decision_of(flow: http.HTTPFlow) -> Decision | None:
    """The decision the router made for this flow; None when it made none."""
    view = flow.metadata.get(METADATA_KEY)
    return view.decision if isinstance(view, DecisionView) else None
