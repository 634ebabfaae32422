"""Send a copy of a route's requests to its mirror, in the background; the answer is dropped.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_mirror_concurrency=64

A route with `mirror: {destination: http://shadow, percent: 10}` gets a `Decision.mirror` for
that share of its requests (`core.resolve.resolve` samples it). In the `request` hook, once the body
is complete, this addon starts a task that sends the copy (`mirror_copy.MirrorCopy`) and
returns at once: the primary request never waits for it, and nothing the mirror does (down,
slow, failing) reaches the client. At most `dispatcher_mirror_concurrency` copies are in flight
per process; beyond that, and for bodies over `MAX_BODY` or streamed, the copy is not sent.
Each result is counted in `sidecar_dispatcher_mirror_requests_total{rule, result}` and logged
at DEBUG only. See docs/mirroring.md.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from .. import options
from ..core.decision import Decision
from ..core.log_safety import printable
from ..core.model import Destination
from ..observe.flow_decision import decision_of
from ..observe.request_metrics import RequestMetrics
from .mirror_copy import MirrorCopy, mirror_path, send, tls_context

logger = logging.getLogger(__name__)

CONCURRENCY_OPTION = options.MIRROR_CONCURRENCY.name
DEFAULT_CONCURRENCY = options.MIRROR_CONCURRENCY.default
MAX_BODY = 1024 * 1024  # bytes: a larger body is not copied (result too_large)
TIMEOUT = 5.0  # seconds for one copy: connect, TLS, send, the mirror's status line
TLS_OPTIONS = frozenset(
    {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}
)
MIRROR_METADATA_KEY = "dispatcher_mirror"  # flow.metadata: scheduled, dropped or too_large
SCHEDULED = "scheduled"

# The results counted, as the metric's `result` label.
SENT, FAILED, DROPPED, TOO_LARGE = "sent", "failed", "dropped", "too_large"


class Mirror:
    """The `request` hook that starts each copy, and the bound on copies in flight."""

    name = "dispatcher-mirror"

    def __init__(self, request_metrics: RequestMetrics) -> None:
        self.request_metrics = request_metrics
        self.concurrency = DEFAULT_CONCURRENCY
        self.in_flight: set[asyncio.Task[None]] = set()  # referenced until done
        self._trust: tuple[bool, str | None, str | None] = (False, None, None)
        self._tls: ssl.SSLContext | None = None  # built at the first https copy

    def load(self, loader: Loader) -> None:
        options.MIRROR_CONCURRENCY.declare(loader)

    def configure(self, updated: set[str]) -> None:
        if CONCURRENCY_OPTION in updated:
            value = ctx.options.dispatcher_mirror_concurrency
            if value < 0:
                raise exceptions.OptionsError(
                    f"{CONCURRENCY_OPTION} must be 0 or more, got {value}"
                )
            self.concurrency = value
        if updated & TLS_OPTIONS:  # the same trust as mitmproxy's for destinations
            options = ctx.options
            self._trust = (
                bool(options.ssl_insecure),
                options.ssl_verify_upstream_trusted_ca or None,
                options.ssl_verify_upstream_trusted_confdir or None,
            )
            self._tls = None

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay:
            return
        decision = decision_of(flow)
        if not decision or decision.mirror is None:
            return
        label = decision.label
        try:
            self._start(flow, label, decision.mirror, decision)
        except Exception as e:  # a copy must never fail the request it copies
            logger.debug("mirror of %s not sent: %r", label, e, exc_info=True)
            self._count(label, FAILED)

    def done(self) -> None:
        for task in self.in_flight:
            task.cancel()

    def _start(
        self, flow: http.HTTPFlow, label: str, mirror: Destination, decision: Decision
    ) -> None:
        request = flow.request
        primary_base = decision.destination.base_path if decision.destination else ""
        path = mirror_path(request.path, primary_base, mirror)
        # Without the query, as in the access log: it may carry secrets.
        what = f"{label} → mirror {mirror}: {request.method} {printable(path.partition('?')[0])}"
        if "upgrade" in request.headers:  # a WebSocket handshake: a copy cannot follow it
            logger.debug("%s not mirrored: an Upgrade request", what)
            return
        body = request.raw_content
        if request.stream or body is None or len(body) > MAX_BODY:
            self._mark(flow, TOO_LARGE, f"not mirrored (body streamed or over {MAX_BODY} bytes)")
            logger.debug("%s not mirrored: body streamed or over %d bytes", what, MAX_BODY)
            self._count(label, TOO_LARGE)
            return
        if len(self.in_flight) >= self.concurrency:
            self._mark(flow, DROPPED, "mirror dropped (too many in flight)")
            logger.debug("%s dropped: %d copies in flight", what, len(self.in_flight))
            self._count(label, DROPPED)
            return
        copy = MirrorCopy.of(
            mirror,
            request.method,
            path,
            request.headers.fields,
            body,
            http2=request.is_http2 or request.is_http3,
        )
        tls = self.tls() if mirror.scheme == "https" else None
        task = asyncio.get_running_loop().create_task(self._send(copy, tls, label, what))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        self._mark(flow, SCHEDULED, f"mirrored to {mirror}")

    async def _send(
        self, copy: MirrorCopy, tls: ssl.SSLContext | None, label: str, what: str
    ) -> None:
        started = time.monotonic()
        try:
            status = await send(copy, tls=tls, timeout=TIMEOUT)
        except asyncio.CancelledError:
            raise  # mitmproxy is stopping
        except Exception as e:  # down, slow, not HTTP: the client never hears of it
            logger.debug("%s failed after %.3fs: %r", what, time.monotonic() - started, e)
            self._count(label, FAILED)
        else:
            logger.debug("%s answered %d in %.3fs", what, status, time.monotonic() - started)
            self._count(label, SENT)

    def tls(self) -> ssl.SSLContext:
        """The TLS context for https mirrors, from mitmproxy's options for destinations."""
        if self._tls is None:
            insecure, cafile, capath = self._trust
            self._tls = tls_context(insecure=insecure, cafile=cafile, capath=capath)
        return self._tls

    def _count(self, label: str, result: str) -> None:
        if self.request_metrics.enabled:
            self.request_metrics.metrics.mirror_request(label, result)

    @staticmethod
    def _mark(flow: http.HTTPFlow, result: str, comment: str) -> None:
        """What became of the copy, in the flow's metadata and its mitmweb comment."""
        flow.metadata[MIRROR_METADATA_KEY] = result
        flow.comment = f"{flow.comment}; {comment}" if flow.comment else comment
