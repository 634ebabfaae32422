"""The Prometheus metrics: what each request, failure and reload adds, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mitmproxy.test import tflow
from prometheus_client.parser import text_string_to_metric_families

from sidecar_dispatcher.observe.metrics import (
    DURATION_BUCKETS,
    DispatchMetrics,
    multiprocess_exposition,
    multiprocess_ready_workers,
)
from sidecar_dispatcher.observe.outcome import upstream_error_kind
from sidecar_dispatcher.testing.loopback import free_port

from .conftest import WriteConfig
from .flows import Harness, HttpErrorHook, HttpResponseHook, answer, make_flow


def samples(exposition: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of every sample called `name` in Prometheus text."""
    found = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def requests_total(metrics: DispatchMetrics) -> dict[tuple[tuple[str, str], ...], float]:
    return samples(metrics.exposition(), "sidecar_dispatcher_requests_total")


@pytest.fixture
def observed(harness: Harness) -> Harness:
    """The harness with an admin address set: metrics are only kept where they can be read."""
    harness.tctx.configure(harness.dispatcher, dispatcher_admin=f"127.0.0.1:{free_port()}")
    return harness


def test_nothing_is_counted_without_an_admin_listener(harness: Harness) -> None:
    harness.hook(HttpResponseHook(answer(harness.dispatch(make_flow(("environment", "dev"))))))
    assert requests_total(harness.dispatcher.metrics.metrics) == {}


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_answered_requests_are_counted_by_rule_destination_and_code(observed: Harness) -> None:
    for key, status in (("dev", 200), ("dev", 200), ("qa", 503), (None, 200)):
        headers = [("environment", key)] if key else []
        observed.hook(HttpResponseHook(answer(observed.dispatch(make_flow(*headers)), status)))
    assert requests_total(observed.dispatcher.metrics.metrics) == {
        (("code", "200"), ("destination", "http://dev.test:8082/base"), ("rule", "dev")): 2.0,
        (("code", "503"), ("destination", "http://default.test:8081"), ("rule", "qa")): 1.0,
        (("code", "200"), ("destination", "http://default.test:8081"), ("rule", "default")): 1.0,
    }


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_durations_land_in_the_rules_histogram(observed: Harness) -> None:
    flow = observed.dispatch(make_flow(("environment", "dev")))
    observed.hook(HttpResponseHook(answer(flow, seconds=0.004)))
    exposition = observed.dispatcher.metrics.metrics.exposition()
    buckets = samples(exposition, "sidecar_dispatcher_request_duration_seconds_bucket")
    assert buckets[(("le", "0.0025"), ("rule", "dev"))] == 0.0
    assert buckets[(("le", "0.005"), ("rule", "dev"))] == 1.0
    assert DURATION_BUCKETS[0] == 0.001 and DURATION_BUCKETS[-1] == 10.0


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_an_upstream_failure_counts_as_a_502_and_by_its_kind(observed: Harness) -> None:
    flow = observed.dispatch(make_flow(("environment", "dev")))
    flow.request.timestamp_start = time.time()
    flow.error = tflow.terr("[Errno 111] Connect call failed ('127.0.0.1', 9)")
    observed.hook(HttpErrorHook(flow))
    metrics = observed.dispatcher.metrics.metrics
    assert requests_total(metrics) == {
        (("code", "502"), ("destination", "http://dev.test:8082/base"), ("rule", "dev")): 1.0
    }
    assert samples(metrics.exposition(), "sidecar_dispatcher_upstream_errors_total") == {
        (
            ("destination", "http://dev.test:8082/base"),
            ("kind", "connect_refused"),
            ("rule", "dev"),
        ): 1.0
    }


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
@pytest.mark.parametrize(
    ("message", "code"),
    [
        (
            "Received invalid content-length header: '1, 2' from client, refusing to prevent "
            "request smuggling attacks. Disable the validate_inbound_headers option to skip "
            "this security check.",
            "400",
        ),
        ("Invalid request scheme: ftp", "400"),
        ("Request body exceeds mitmproxy's body_size_limit.", "413"),
    ],
)
def test_a_request_mitmproxy_refused_counts_with_the_status_it_answered(
    observed: Harness, message: str, code: str
) -> None:
    flow = make_flow(("environment", "dev"))  # refused before any rule: never dispatched
    flow.request.timestamp_start = time.time()
    flow.error = tflow.terr(message)
    observed.hook(HttpErrorHook(flow))
    metrics = observed.dispatcher.metrics.metrics
    assert requests_total(metrics) == {
        (("code", code), ("destination", "none"), ("rule", "refused")): 1.0
    }
    assert samples(metrics.exposition(), "sidecar_dispatcher_upstream_errors_total") == {}


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_a_client_that_left_is_not_an_answered_request(observed: Harness) -> None:
    flow = observed.dispatch(make_flow(("environment", "dev")))
    flow.error = tflow.terr("Client disconnected.")
    observed.hook(HttpErrorHook(flow))
    assert requests_total(observed.dispatcher.metrics.metrics) == {}


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_random_key_values_do_not_create_series(observed: Harness) -> None:
    for number in range(50):
        flow = observed.dispatch(make_flow(("environment", f"random-{number}")))
        observed.hook(HttpResponseHook(answer(flow)))
    assert list(requests_total(observed.dispatcher.metrics.metrics).values()) == [50.0]


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_refused_requests_count_under_a_fixed_label(observed: Harness) -> None:
    flow = observed.dispatch(make_flow(("environment", "dev"), ("environment", "qa")))
    observed.hook(HttpResponseHook(flow))
    assert requests_total(observed.dispatcher.metrics.metrics) == {
        (("code", "400"), ("destination", "none"), ("rule", "refused")): 1.0
    }


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_config_reads_are_counted_and_the_rules_in_force_shown(
    observed: Harness, config_path: Path, write_config: WriteConfig
) -> None:
    def last_ok() -> float:
        exposition = observed.dispatcher.metrics.metrics.exposition()
        return samples(exposition, "sidecar_dispatcher_config_last_reload_successful")[()]

    exposition = observed.dispatcher.metrics.metrics.exposition()
    assert samples(exposition, "sidecar_dispatcher_config_reloads_total") == {
        (("result", "applied"),): 1.0,
        (("result", "rejected"),): 0.0,  # there from the start: increase() sees the first one
    }
    assert last_ok() == 1.0
    config_path.write_text("key: environment\ndestination: nowhere\n")
    observed.dispatcher.config.reload("test")
    assert last_ok() == 0.0
    config_path.write_text("key: environment\ndestination: http://other.test\n")
    before = time.time()
    observed.dispatcher.config.reload("test")
    exposition = observed.dispatcher.metrics.metrics.exposition()
    assert samples(exposition, "sidecar_dispatcher_config_reloads_total") == {
        (("result", "applied"),): 2.0,  # at start-up, then now
        (("result", "rejected"),): 1.0,
    }
    assert samples(exposition, "sidecar_dispatcher_rules") == {(): 0.0}
    assert last_ok() == 1.0
    (last,) = samples(
        exposition, "sidecar_dispatcher_config_last_reload_success_timestamp_seconds"
    ).values()
    assert last >= before


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_readiness_follows_config_listening_and_draining(observed: Harness) -> None:
    def ready() -> float:
        exposition = observed.dispatcher.metrics.metrics.exposition()
        return samples(exposition, "sidecar_dispatcher_ready")[()]

    readiness = observed.dispatcher.readiness
    assert readiness.config_loaded and not readiness.listening
    assert ready() == 0.0
    readiness.update(listening=True)
    assert ready() == 1.0
    readiness.update(draining=True)
    assert ready() == 0.0


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("[Errno 111] Connect call failed ('127.0.0.1', 1)", "connect_refused"),
        ("Certificate verify failed: unable to get local issuer certificate", "tls"),
        ("TLS handshake failed", "tls"),
        ("Connection timed out", "timeout"),
        ("[Errno -2] Name or service not known", "dns"),
        ("server closed connection", "reset"),
        ("[Errno 104] Connection reset by peer", "reset"),
        ("Cannot parse HTTP response: bad status line", "protocol"),
        ("something new", "other"),
    ],
)
def test_upstream_errors_map_to_short_stable_kinds(message: str, kind: str) -> None:
    assert upstream_error_kind(message) == kind


WORKER = """
import sys
from sidecar_dispatcher.observe.metrics import DispatchMetrics
metrics = DispatchMetrics()
for _ in range(int(sys.argv[1])):
    metrics.request_answered("dev", "http://dev", 200, 0.01)
metrics.ready.set(1)
"""


@pytest.mark.spawns
def test_workers_metrics_are_summed_from_their_shared_folder(tmp_path: Path) -> None:
    for count in (3, 4):
        subprocess.run(
            [sys.executable, "-c", WORKER, str(count)],
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": ""},
            check=True,
            timeout=60,
        )
    exposition = multiprocess_exposition(str(tmp_path), workers=2)
    assert samples(exposition, "sidecar_dispatcher_requests_total") == {
        (("code", "200"), ("destination", "http://dev"), ("rule", "dev")): 7.0
    }
    assert samples(exposition, "sidecar_dispatcher_workers") == {(): 2.0}
    assert multiprocess_ready_workers(str(tmp_path)) == 2


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_a_rule_named_like_a_reserved_label_is_warned_about(
    observed: Harness, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path.write_text("key: e\ndestination: http://a.test\nrewrites: {default: {}}\n")
    observed.dispatcher.config.reload("test")
    assert "rule name(s) default are also the labels of the default destination" in caplog.text
    config_path.write_text("key: e\ndestination: http://a.test\nroutes: [{name: unmatched}]\n")
    observed.dispatcher.config.reload("test")
    assert "rule name(s) unmatched are also" in caplog.text


@pytest.mark.spawns  # `observed` binds an admin listener on loopback
def test_no_created_samples_are_exposed(observed: Harness) -> None:
    observed.hook(HttpResponseHook(answer(observed.dispatch(make_flow()))))
    assert b"_created" not in observed.dispatcher.metrics.metrics.exposition()
