"""The dispatcher's Prometheus metrics: their names, labels and buckets, in one place.

    metrics = DispatchMetrics()
    metrics.request_answered("dev", "http://dev:8080", 200, seconds=0.012)
    text = metrics.exposition()

Label values come from the config (rule names, destination URLs) and from status codes, never
from raw client input, so a client sending random key values cannot create new series.

With `--workers N`, each worker writes its values to files in $PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode, chosen when prometheus_client is first imported) and the
supervisor serves their sum (`multiprocess_exposition`). This module does not import mitmproxy.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

PREFIX = "sidecar_dispatcher"
REQUESTS = f"{PREFIX}_requests"  # exposed as ..._requests_total
REQUEST_DURATION = f"{PREFIX}_request_duration_seconds"
UPSTREAM_ERRORS = f"{PREFIX}_upstream_errors"  # ..._upstream_errors_total
CONFIG_RELOADS = f"{PREFIX}_config_reloads"  # ..._config_reloads_total
CONFIG_LAST_SUCCESS = f"{PREFIX}_config_last_reload_success_timestamp_seconds"
CONFIG_LAST_OK = f"{PREFIX}_config_last_reload_successful"
RULES = f"{PREFIX}_rules"
READY = f"{PREFIX}_ready"
WORKERS = f"{PREFIX}_workers"
MIRROR_REQUESTS = f"{PREFIX}_mirror_requests"  # ..._mirror_requests_total

# From 1 ms (a sidecar on loopback adds about that) to 10 s (past any sane upstream timeout).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"

# A `_created` sample per series doubles the series and exists only in one-process mode (the
# multiprocess collector has none); no dashboard or alert here needs it.
disable_created_metrics()


class DispatchMetrics:
    """Every metric of one process, in a registry of its own (a test may hold several)."""

    def __init__(self, workers: int = 1) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            REQUESTS,
            "Requests answered, by rule (or default), destination and the status the client got.",
            ["rule", "destination", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            REQUEST_DURATION,
            "From request headers received to response complete, by rule.",
            ["rule"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            UPSTREAM_ERRORS,
            "Requests whose destination failed, by rule, destination and kind of failure.",
            ["rule", "destination", "kind"],
            registry=registry,
        )
        self.mirror_requests = Counter(
            MIRROR_REQUESTS,
            "Copies of requests for a route's mirror, by rule and result: sent (the mirror "
            "answered), failed, dropped (too many in flight) or too_large (body not kept).",
            ["rule", "result"],
            registry=registry,
        )
        self.config_reloads = Counter(
            CONFIG_RELOADS,
            "Config files read, by result: applied, or rejected (the last good config stays).",
            ["result"],
            registry=registry,
        )
        for result in ("applied", "rejected"):  # from 0, so that the first rejection shows
            self.config_reloads.labels(result)
        # Gauges say how to combine workers: each holds the same config, and is ready or not.
        self.last_success = Gauge(
            CONFIG_LAST_SUCCESS,
            "When a config was last applied (Unix time).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.last_ok = Gauge(
            CONFIG_LAST_OK,
            "1 if the last config read was applied, 0 if it was rejected (until a good one).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.rules = Gauge(RULES, "Rules in force.", registry=registry, multiprocess_mode="livemax")
        self.ready = Gauge(
            READY,
            "1 while the sidecar serves and is not draining; summed over workers.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        registry.register(WorkersCollector(workers))

    def request_answered(self, rule: str, destination: str, code: int, seconds: float) -> None:
        self.requests.labels(rule, destination, str(code)).inc()
        self.duration.labels(rule).observe(seconds)

    def upstream_failed(self, rule: str, destination: str, kind: str) -> None:
        self.upstream_errors.labels(rule, destination, kind).inc()

    def mirror_request(self, rule: str, result: str) -> None:
        self.mirror_requests.labels(rule, result).inc()

    def config_applied(self, rules: int, at: float) -> None:
        self.config_reloads.labels("applied").inc()
        self.last_success.set(at)
        self.last_ok.set(1)
        self.rules.set(rules)

    def config_rejected(self) -> None:
        self.config_reloads.labels("rejected").inc()
        self.last_ok.set(0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class WorkersCollector(Collector):
    """`sidecar_dispatcher_workers`: how many workers should be ready (1 without --workers)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def collect(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(WORKERS, "Worker processes configured.", value=self.workers)]


def multiprocess_exposition(directory: str, workers: int) -> bytes:
    """The sum over every worker that wrote to `directory`, as the supervisor serves it."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    registry.register(WorkersCollector(workers))
    return generate_latest(registry)


def multiprocess_ready_workers(directory: str) -> int:
    """How many live workers say they are ready (the `livesum` of their ready gauges)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    for family in registry.collect():
        if family.name == READY:
            return int(sum(sample.value for sample in family.samples))
    return 0


def in_multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIRECTORY))
