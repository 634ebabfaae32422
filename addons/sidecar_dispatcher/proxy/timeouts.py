"""Answer 504 when a destination sends no response headers in time, and reset the request there.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_upstream_timeout=30

The clock starts when the request is complete (the `request` hook: its body received, or
forwarded when streamed) and stops when the response headers arrive; it covers the upstream
connect and TLS handshake too. A route's `timeout` overrides the option
`dispatcher_upstream_timeout` (60 s by default, as nginx's `proxy_read_timeout`; `0` turns it
off where no route sets one). When it runs out the client gets a 504 with a plain-text body
naming the rule (its destination goes to the log only), the request is reset upstream (HTTP/1:
the connection is closed; HTTP/2: the stream is reset), and the flow completes through the
`responseheaders` and `response` hooks with `flow.metadata["dispatcher_timed_out"]` set, so
that metrics and the access log count a 504 of upstream error kind `timeout`.

mitmproxy has no public way to answer a request that has gone upstream: `_mitmproxy`
holds how this is done, and the checks that it still can be.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from mitmproxy import ctx, exceptions, http, master
from mitmproxy.addonmanager import Loader

from .. import _mitmproxy as internals
from .. import options
from ..config.routes import MAX_TIMEOUT
from ..core.decision import DEFAULT_LABEL, Decision
from ..observe.flow_decision import decision_of
from ..observe.outcome import TIMED_OUT_KEY, UPSTREAM_TIMEOUT_STATUS
from .router import error_response

logger = logging.getLogger(__name__)

TIMEOUT_OPTION = options.UPSTREAM_TIMEOUT.name
DEFAULT_TIMEOUT = str(options.UPSTREAM_TIMEOUT.default)
# While the flow's upstream connection is still being opened (or a hook holds the flow), the
# answer waits: it is tried again after this long, then twice as long each time, up to a second.
RETRY_SECONDS = 0.05
RETRY_SECONDS_AT_MOST = 1.0


def parse_timeout(text: str) -> float | None:
    """Seconds, or None for `0` (off); ValueError naming the value otherwise."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_TIMEOUT:  # also refuses nan and inf
        raise ValueError(
            f"{TIMEOUT_OPTION} must be a number of seconds from 0 (off) to {MAX_TIMEOUT:g}, "
            f"got {text!r}"
        )
    return seconds or None


def overdue_answer(decision: Decision, seconds: float, method: str) -> http.Response:
    """The 504: which rule, how long; never the destination's address."""
    if decision.rule is None:
        who = DEFAULT_LABEL
    elif decision.by_route:
        who = f"route {decision.label}"
    else:
        who = f"rule {decision.label}"
    text = (
        f"sidecar dispatcher: {who}: no response headers from its destination within {seconds:g} s"
    )
    return error_response(UPSTREAM_TIMEOUT_STATUS, text, method)


@dataclass(slots=True)
class _Clock:
    """A flow waiting for its response headers."""

    seconds: float
    timer: asyncio.TimerHandle
    answer: http.Response | None = None  # once overdue: what the client gets instead
    retry_seconds: float = RETRY_SECONDS


class UpstreamTimeouts:
    """One timer per request in flight; on expiry, the flow's connection answers it."""

    name = "dispatcher-timeouts"

    def __init__(self) -> None:
        self.default: float | None = parse_timeout(DEFAULT_TIMEOUT)
        self.clocks: dict[str, _Clock] = {}  # by flow id
        self.master: master.Master | None = None
        self.available = False  # this mitmproxy has what answering needs (checked in load)

    def load(self, loader: Loader) -> None:
        options.UPSTREAM_TIMEOUT.declare(loader)
        self.master = loader.master
        if problems := internals.self_check(loader.master, timeouts_only=True):
            # An error at start-up stops mitmdump, as the runner refuses to start.
            logger.error(
                "mitmproxy %s lacks internals the upstream timeout relies on:\n%s",
                internals.mitmproxy_version(),
                "\n".join(f"  - {problem}" for problem in problems),
            )
            return
        internals.answer_overdue_flows()
        self.available = True

    def configure(self, updated: set[str]) -> None:
        if TIMEOUT_OPTION in updated:
            try:
                self.default = parse_timeout(ctx.options.dispatcher_upstream_timeout)
            except ValueError as e:
                raise exceptions.OptionsError(str(e)) from e

    def done(self) -> None:
        for clock in self.clocks.values():
            clock.timer.cancel()
        self.clocks.clear()

    # --- hooks

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay:
            return
        decision = decision_of(flow)
        if not decision or decision.destination is None or not self.available:
            return  # the sidecar answers it itself, or it was not dispatched
        seconds = decision.timeout or self.default
        if seconds:
            assert self.master is not None
            timer = self.master.event_loop.call_later(seconds, self._expired, flow)
            self.clocks[flow.id] = _Clock(seconds, timer)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        clock = self.clocks.pop(flow.id, None)
        if clock is not None:
            clock.timer.cancel()
            if clock.answer is not None and flow.response is clock.answer:
                flow.metadata[TIMED_OUT_KEY] = clock.seconds

    def error(self, flow: http.HTTPFlow) -> None:
        if (clock := self.clocks.pop(flow.id, None)) is not None:
            clock.timer.cancel()

    # --- the timer

    def _expired(self, flow: http.HTTPFlow) -> None:
        clock = self.clocks.get(flow.id)
        if clock is None:
            return
        if flow.response is not None or flow.error is not None or not flow.live:
            del self.clocks[flow.id]  # a hook will not come for it, or has come
            return
        decision = decision_of(flow)
        assert decision is not None  # a clock is started only for a dispatched flow
        if clock.answer is None:
            clock.answer = overdue_answer(decision, clock.seconds, flow.request.method)
            logger.warning(
                "%s → %s: no response headers within %g s; answering 504",
                decision.label,
                decision.destination,
                clock.seconds,
            )
        assert self.master is not None
        event = internals.ResponseHeadersOverdue(
            flow,
            clock.answer,
            reason=f"no response headers within {clock.seconds:g} s",
            delivered=lambda delivery: self._delivered(flow, clock, delivery),
        )
        if not internals.inject_overdue(self.master, event):
            self.clocks.pop(flow.id, None)  # its client connection is gone

    def _delivered(self, flow: http.HTTPFlow, clock: _Clock, delivery: internals.Delivery) -> None:
        """Called while the flow's connection handles the event, maybe within _expired()."""
        if self.clocks.get(flow.id) is not clock:
            return
        if delivery is internals.Delivery.NOT_YET:
            assert self.master is not None
            clock.timer = self.master.event_loop.call_later(
                clock.retry_seconds, self._expired, flow
            )
            clock.retry_seconds = min(2 * clock.retry_seconds, RETRY_SECONDS_AT_MOST)
        elif delivery is internals.Delivery.NOTHING_TO_DO:
            del self.clocks[flow.id]  # its response headers came meanwhile, or it failed
        # ANSWERING, CONNECT_CANCELLED: `responseheaders` follows, and removes the clock.
