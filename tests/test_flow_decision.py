"""The router hands its typed decision to the addons after it; the metadata holds only a view."""

from __future__ import annotations

import io

from mitmproxy import http
from mitmproxy.io import FlowReader, FlowWriter

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


def test_a_copy_of_a_flow_carries_the_decision_and_its_view(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    copy = flow.copy()  # as mitmweb's replay and duplicate make one
    assert copy.metadata[METADATA_KEY] == flow.metadata[METADATA_KEY]
    assert decision_of(copy) == decision_of(flow)


def test_a_flow_written_to_a_file_keeps_the_view_alone(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    file = io.BytesIO()
    FlowWriter(file).add(flow)
    file.seek(0)
    (read,) = FlowReader(file).stream()
    assert isinstance(read, http.HTTPFlow)
    assert read.metadata[METADATA_KEY] == flow.metadata[METADATA_KEY]
    assert type(read.metadata[METADATA_KEY]) is dict
    assert decision_of(read) is None


def test_a_view_written_by_hand_is_not_a_decision() -> None:
    flow = make_flow(("environment", "dev"))
    flow.metadata[METADATA_KEY] = {"rule": "dev", "label": "dev"}
    assert decision_of(flow) is None
