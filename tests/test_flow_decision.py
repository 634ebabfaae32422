"""The router hands its typed decision to the addons after it; the metadata holds only a view."""

from __future__ import annotations

import gc
import weakref

from sidecar_dispatcher.core.decision import METADATA_KEY, Decision
from sidecar_dispatcher.core.recording import CLIENT_REQUEST_KEY
from sidecar_dispatcher.observe.flow_decision import decision_of

from .flows import Harness, make_flow


def test_a_dispatched_flow_carries_the_decision_itself(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    decision = decision_of(flow)
    assert isinstance(decision, Decision)
    assert (decision.rule, decision.label, decision.by_route) == ("dev", "dev", False)
    assert decision.destination is not None
    assert flow.request.host == decision.destination.host


def test_the_metadata_is_the_decisions_view_with_the_clients_request(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    decision = decision_of(flow)
    assert decision is not None
    view = dict(flow.metadata[METADATA_KEY])
    assert CLIENT_REQUEST_KEY in view
    del view[CLIENT_REQUEST_KEY]
    assert view == decision.as_metadata()


def test_a_refused_flow_has_no_decision(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev"), ("environment", "qa")))
    assert flow.response is not None and flow.response.status_code == 400
    assert decision_of(flow) is None
    assert METADATA_KEY not in flow.metadata


def test_a_copy_of_a_flow_carries_the_view_but_not_the_decision(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    copy = flow.copy()
    assert copy.metadata[METADATA_KEY] == flow.metadata[METADATA_KEY]
    assert decision_of(copy) is None


def test_a_decision_does_not_keep_its_flow_alive(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    assert decision_of(flow) is not None
    gone = weakref.ref(flow)
    del flow
    gc.collect()
    assert gone() is None
