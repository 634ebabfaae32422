"""The upstream timeout: which requests get a clock, for how long, and what its expiry does.

How mitmproxy is made to answer is tested in test_mitmproxy_internals.py; end to end, against
never-answering destinations, in integration/test_timeouts.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.layers.http._hooks import HttpRequestHook, HttpResponseHeadersHook
from mitmproxy.test import taddons, tflow
from prometheus_client.parser import text_string_to_metric_families

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher import _mitmproxy as internals
from sidecar_dispatcher.core.decision import Decision
from sidecar_dispatcher.observe.access_log import text_line
from sidecar_dispatcher.observe.flow_decision import decision_of
from sidecar_dispatcher.observe.outcome import TIMED_OUT_KEY, Outcome
from sidecar_dispatcher.proxy.timeouts import (
    RETRY_SECONDS,
    RETRY_SECONDS_AT_MOST,
    UpstreamTimeouts,
    overdue_answer,
    parse_timeout,
)
from sidecar_dispatcher.testing.loopback import free_port

from .conftest import WriteConfig
from .flows import CONFIG, Harness, HttpErrorHook, HttpResponseHook, make_flow

Delivery = internals.Delivery

ROUTES = (
    CONFIG
    + """
routes:
  - name: canary
    match:
      headers:
        x-tenant: {prefix: "eu-"}
    destination: http://canary.test:8080
    timeout: 2.5
  - name: plain
    match:
      path: {prefix: /plain}
    destination: http://plain.test:8080
"""
)


def decided(flow: http.HTTPFlow) -> Decision:
    decision = decision_of(flow)
    assert decision is not None, "the router made no decision for this flow"
    return decision


def clock_of(dispatcher: Dispatcher) -> UpstreamTimeouts:
    (timeouts,) = [addon for addon in dispatcher.addons if isinstance(addon, UpstreamTimeouts)]
    return timeouts


@pytest.fixture
def routed(harness: Harness, write_config: WriteConfig) -> Harness:
    """The harness with a route that has a timeout (canary) and one without (plain)."""
    harness.tctx.configure(harness.dispatcher, dispatcher_config=str(write_config(ROUTES)))
    return harness


def requested(harness: Harness, *headers: tuple[str, str], path: str = "/x") -> http.HTTPFlow:
    """A request dispatched and complete: its clock runs."""
    flow = harness.dispatch(make_flow(*headers, path=path))
    harness.hook(HttpRequestHook(flow))
    return flow


def seconds_left(timeouts: UpstreamTimeouts, flow: http.HTTPFlow) -> float:
    assert timeouts.master is not None
    return timeouts.clocks[flow.id].timer.when() - timeouts.master.event_loop.time()


# --- the option


@pytest.mark.parametrize(("text", "seconds"), [("60", 60.0), ("2.5", 2.5), ("3600", 3600.0)])
def test_the_option_is_a_number_of_seconds(text: str, seconds: float) -> None:
    assert parse_timeout(text) == seconds


def test_zero_turns_the_option_off() -> None:
    assert parse_timeout("0") is None


@pytest.mark.parametrize("text", ["-1", "sixty", "", "nan", "inf", "3601", "60s"])
def test_anything_else_is_refused_naming_the_value(harness: Harness, text: str) -> None:
    with pytest.raises(exceptions.OptionsError, match=rf"dispatcher_upstream_timeout .*{text!r}"):
        harness.tctx.configure(harness.dispatcher, dispatcher_upstream_timeout=text)


def test_the_default_is_60_seconds_as_nginx(harness: Harness) -> None:
    assert harness.tctx.options.dispatcher_upstream_timeout == "60"
    assert clock_of(harness.dispatcher).default == 60.0


# --- the clock


def test_a_dispatched_request_gets_the_options_seconds(harness: Harness) -> None:
    harness.tctx.configure(harness.dispatcher, dispatcher_upstream_timeout="7")
    timeouts = clock_of(harness.dispatcher)
    flow = requested(harness, ("environment", "dev"))
    assert timeouts.clocks[flow.id].seconds == 7.0
    assert 6.9 < seconds_left(timeouts, flow) <= 7.0


def test_the_default_destination_gets_them_too(harness: Harness) -> None:
    flow = requested(harness)
    assert clock_of(harness.dispatcher).clocks[flow.id].seconds == 60.0


def test_a_routes_timeout_overrides_the_option(routed: Harness) -> None:
    routed.tctx.configure(routed.dispatcher, dispatcher_upstream_timeout="0")
    timeouts = clock_of(routed.dispatcher)
    canary = requested(routed, ("x-tenant", "eu-1"))
    plain = requested(routed, path="/plain/x")
    assert timeouts.clocks[canary.id].seconds == 2.5
    assert plain.id not in timeouts.clocks  # 0: off where no route sets one


def test_requests_the_sidecar_answers_itself_get_no_clock(harness: Harness) -> None:
    refused = requested(harness, ("environment", "dev"), ("environment", "qa"))
    assert refused.response is not None and refused.response.status_code == 400
    assert clock_of(harness.dispatcher).clocks == {}


def test_response_headers_stop_the_clock(harness: Harness) -> None:
    timeouts = clock_of(harness.dispatcher)
    flow = requested(harness, ("environment", "dev"))
    timer = timeouts.clocks[flow.id].timer
    flow.response = http.Response.make(200)
    harness.hook(HttpResponseHeadersHook(flow))
    assert timeouts.clocks == {}
    assert timer.cancelled()
    assert TIMED_OUT_KEY not in flow.metadata


def test_an_error_stops_the_clock(harness: Harness) -> None:
    timeouts = clock_of(harness.dispatcher)
    flow = requested(harness, ("environment", "dev"))
    timer = timeouts.clocks[flow.id].timer
    flow.error = tflow.terr("Client disconnected.")
    harness.hook(HttpErrorHook(flow))
    assert timeouts.clocks == {}
    assert timer.cancelled()


def test_stopping_the_sidecar_cancels_every_clock(harness: Harness) -> None:
    timeouts = clock_of(harness.dispatcher)
    timers = [timeouts.clocks[requested(harness).id].timer for _ in range(3)]
    timeouts.done()
    assert timeouts.clocks == {}
    assert all(timer.cancelled() for timer in timers)


# --- the answer


def test_the_answer_is_a_plain_text_504_naming_the_route_not_its_destination(
    routed: Harness,
) -> None:
    flow = routed.dispatch(make_flow(("x-tenant", "eu-1")))
    answer = overdue_answer(decided(flow), 2.5, "GET")
    assert answer.status_code == 504
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.content == (
        b"sidecar dispatcher: route canary: no response headers from its destination within 2.5 s\n"
    )
    assert b"canary.test" not in answer.content


def test_the_answer_names_a_rule_or_the_default(harness: Harness) -> None:
    dev = harness.dispatch(make_flow(("environment", "dev")))
    default = harness.dispatch(make_flow())
    assert overdue_answer(decided(dev), 60, "GET").content == (
        b"sidecar dispatcher: rule dev: no response headers from its destination within 60 s\n"
    )
    assert overdue_answer(decided(default), 1, "GET").text == (
        "sidecar dispatcher: default: no response headers from its destination within 1 s\n"
    )


def test_the_answer_to_head_has_no_body(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    answer = overdue_answer(decided(flow), 60, "HEAD")
    assert answer.status_code == 504
    assert answer.content == b""
    assert answer.headers["Content-Length"] == "0"


class Injected:
    """Stands in for _mitmproxy.inject_overdue: keeps the events, replies as told."""

    def __init__(self, *replies: Delivery) -> None:
        self.events: list[internals.ResponseHeadersOverdue] = []
        self.replies = list(replies)

    def __call__(self, running: object, event: internals.ResponseHeadersOverdue) -> bool:
        self.events.append(event)
        if self.replies:
            event.delivered(self.replies.pop(0))
        return True


def expire(timeouts: UpstreamTimeouts, flow: http.HTTPFlow) -> None:
    """What the event loop does when the clock's timer runs out (without the wait)."""
    timeouts.clocks[flow.id].timer.cancel()
    timeouts._expired(flow)


def test_expiry_hands_the_answer_to_the_flows_connection_and_logs_where_it_went(
    routed: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    injected = Injected(Delivery.ANSWERING)
    monkeypatch.setattr(internals, "inject_overdue", injected)
    timeouts = clock_of(routed.dispatcher)
    flow = requested(routed, ("x-tenant", "eu-1"))
    with caplog.at_level(logging.WARNING, logger="sidecar_dispatcher.proxy.timeouts"):
        expire(timeouts, flow)
    (event,) = injected.events
    assert event.flow is flow
    assert event.message.status_code == 504
    assert caplog.messages == [
        "canary → http://canary.test:8080: no response headers within 2.5 s; answering 504"
    ]
    assert flow.id in timeouts.clocks  # until its responseheaders hook


@pytest.mark.spawns
def test_the_answered_flow_counts_as_a_504_of_kind_timeout(
    routed: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    routed.tctx.configure(routed.dispatcher, dispatcher_admin=f"127.0.0.1:{free_port()}")
    injected = Injected(Delivery.ANSWERING)
    monkeypatch.setattr(internals, "inject_overdue", injected)
    timeouts = clock_of(routed.dispatcher)
    flow = requested(routed, ("x-tenant", "eu-1"))
    flow.request.timestamp_start = time.time() - 2.5
    expire(timeouts, flow)
    flow.response = injected.events[0].message  # as the wrapped HttpStream does
    routed.hook(HttpResponseHeadersHook(flow))
    routed.hook(HttpResponseHook(flow))
    assert flow.metadata[TIMED_OUT_KEY] == 2.5
    assert timeouts.clocks == {}
    outcome = Outcome.of(flow)
    assert (outcome.status, outcome.upstream_error_kind) == (504, "timeout")
    assert outcome.upstream_error == "no response headers within 2.5 s"
    assert text_line(outcome, "route canary matched", []).endswith(" upstream_error=timeout")
    exposition = routed.dispatcher.metrics.metrics.exposition().decode()
    counted = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    canary = ("destination", "http://canary.test:8080")
    assert (
        counted[
            ("sidecar_dispatcher_requests_total", (("code", "504"), canary, ("rule", "canary")))
        ]
        == 1.0
    )
    assert (
        counted[
            (
                "sidecar_dispatcher_upstream_errors_total",
                (canary, ("kind", "timeout"), ("rule", "canary")),
            )
        ]
        == 1.0
    )


def test_a_response_that_is_not_the_answer_is_not_marked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(internals, "inject_overdue", Injected(Delivery.NOT_YET))
    timeouts = clock_of(harness.dispatcher)
    flow = requested(harness, ("environment", "dev"))
    expire(timeouts, flow)
    flow.response = http.Response.make(200)  # the destination's, just in time
    harness.hook(HttpResponseHeadersHook(flow))
    assert TIMED_OUT_KEY not in flow.metadata
    assert Outcome.of(flow).upstream_error_kind is None


def test_not_yet_asks_again_shortly_then_less_often(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    injected = Injected(*[Delivery.NOT_YET] * 8)
    monkeypatch.setattr(internals, "inject_overdue", injected)
    timeouts = clock_of(harness.dispatcher)
    flow = requested(harness, ("environment", "dev"))
    waits = []
    for _ in range(8):
        expire(timeouts, flow)
        waits.append(round(seconds_left(timeouts, flow), 2))
    assert waits[0] == pytest.approx(RETRY_SECONDS, abs=0.01)
    assert waits[1] == pytest.approx(2 * RETRY_SECONDS, abs=0.01)
    assert waits[-1] == pytest.approx(RETRY_SECONDS_AT_MOST, abs=0.01)
    assert len({id(event.message) for event in injected.events}) == 1  # one answer, one log


def test_nothing_to_do_forgets_the_flow(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "inject_overdue", Injected(Delivery.NOTHING_TO_DO))
    timeouts = clock_of(harness.dispatcher)
    expire(timeouts, requested(harness))
    assert timeouts.clocks == {}


def test_a_gone_client_connection_forgets_the_flow(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(internals, "inject_overdue", lambda running, event: False)
    timeouts = clock_of(harness.dispatcher)
    expire(timeouts, requested(harness))
    assert timeouts.clocks == {}


def test_a_flow_that_ended_without_hooks_is_forgotten_at_expiry(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    injected = Injected()
    monkeypatch.setattr(internals, "inject_overdue", injected)
    timeouts = clock_of(harness.dispatcher)
    flow = requested(harness)
    flow.live = False
    expire(timeouts, flow)
    assert timeouts.clocks == {}
    assert injected.events == []


# --- a mitmproxy without the internals it needs


def test_missing_internals_turn_the_timeout_off_with_an_error_that_stops_mitmdump(
    config_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = internals.Reach("Example.internal", lambda _lean: "it is gone", for_timeouts=True)
    monkeypatch.setattr(internals, "REACHES", (*internals.REACHES, broken))
    dispatcher = Dispatcher()
    with caplog.at_level(logging.ERROR), taddons.context(Proxyserver(), dispatcher) as tctx:
        tctx.configure(dispatcher, dispatcher_config=str(config_path))
        harness = Harness(tctx, dispatcher)
        requested(harness, ("environment", "dev"))
        assert clock_of(dispatcher).clocks == {}
    (record,) = [r for r in caplog.records if r.name == "sidecar_dispatcher.proxy.timeouts"]
    assert record.levelno == logging.ERROR  # mitmproxy's errorcheck exits at start-up on it
    assert "lacks internals the upstream timeout relies on" in record.getMessage()
    assert "  - Example.internal: it is gone" in record.getMessage()
