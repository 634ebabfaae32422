"""Count every answered request, upstream failure and config reload in Prometheus metrics.

    Dispatcher().metrics.metrics.exposition()   # what /metrics serves

Nothing is counted while nobody can read it: without an admin listener, and outside a
`--workers` supervisor's multiprocess directory, the hooks return at once.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import ctx, http

from .. import options
from ..core.decision import DEFAULT_LABEL, UNMATCHED_LABEL
from ..core.model import RuleSet
from .admin import Readiness
from .metrics import DispatchMetrics, in_multiprocess_mode
from .outcome import REFUSED, Outcome

logger = logging.getLogger(__name__)

ADMIN_OPTION = options.ADMIN.name
RESERVED_LABELS = frozenset({DEFAULT_LABEL, REFUSED, UNMATCHED_LABEL})


class RequestMetrics:
    """The `response`/`error` hooks and the config listener that feed `DispatchMetrics`."""

    name = "dispatcher-metrics"

    def __init__(self, readiness: Readiness) -> None:
        self.metrics = DispatchMetrics()
        self.enabled = in_multiprocess_mode()
        self.readiness = readiness
        readiness.on_change = self._readiness_changed

    def configure(self, updated: set[str]) -> None:
        if ADMIN_OPTION in updated:
            self.enabled = bool(ctx.options.dispatcher_admin) or in_multiprocess_mode()

    # --- the config listener (LiveConfig calls these)

    def config_applied(self, rule_set: RuleSet) -> None:
        self.metrics.config_applied(rule_set.rule_count, at=time.time())
        self.readiness.update(config_loaded=True)
        names = {*rule_set.rewrites, *(route.name for route in rule_set.routes)}
        if clashes := sorted(RESERVED_LABELS & names):
            logger.warning(
                "rule name(s) %s are also the labels of %s in metrics and the access log: "
                "their counts add up there; rename the rule(s) to tell them apart",
                ", ".join(clashes),
                "the default destination, refused requests and the unmatched answer",
            )

    def config_rejected(self) -> None:
        self.metrics.config_rejected()

    # --- hooks

    def response(self, flow: http.HTTPFlow) -> None:
        if self.enabled:
            self._count(Outcome.of(flow))

    def error(self, flow: http.HTTPFlow) -> None:
        if self.enabled and flow.response is None:  # else `response` counted it
            self._count(Outcome.of(flow))

    def _count(self, outcome: Outcome) -> None:
        if outcome.upstream_error_kind is not None:
            self.metrics.upstream_failed(
                outcome.rule, outcome.destination, outcome.upstream_error_kind
            )
        if outcome.answered:
            self.metrics.request_answered(
                outcome.rule, outcome.destination, outcome.status, outcome.duration_seconds
            )

    def _readiness_changed(self, ready: bool) -> None:
        self.metrics.ready.set(1 if ready else 0)
