"""What an operator sees of a real sidecar: /metrics, /healthz, /readyz and the access log.

Each runs against `mitmdump -s addons/dispatcher.py --set dispatcher_admin=…` and the runner
(`SIDECAR_ADMIN`), one process or two workers, in front of real loopback upstreams.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar_dispatcher.testing.loopback import Response, free_port, send

from .processes import Sidecar, Upstream

Labels = tuple[tuple[str, str], ...]


def scrape(sidecar: Sidecar) -> dict[str, dict[Labels, float]]:
    """{sample name: {sorted labels: value}} from the sidecar's /metrics."""
    response = sidecar.admin("/metrics")
    assert response.status == 200, response.body
    found: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def send_known_traffic(sidecar: Sidecar, rounds: int = 1) -> None:
    """Per round: 3 to dev, 2 to the default, 1 to the `down` rule (a closed port)."""
    for _ in range(rounds):
        for key, expected in (("dev", 200),) * 3 + ((None, 200),) * 2 + (("down", 502),):
            headers = [("environment", key)] if key else []
            assert send(sidecar.port, "GET", "/counted", headers).status == expected


def request_counts(metrics: dict[str, dict[Labels, float]]) -> dict[tuple[str, str], float]:
    """{(rule, code): count} of sidecar_dispatcher_requests_total."""
    counts = metrics.get("sidecar_dispatcher_requests_total", {})
    return {(dict(k)["rule"], dict(k)["code"]): v for k, v in counts.items()}


@pytest.fixture(scope="module")
def observed(config_file: Path, default_upstream: Upstream, engine: str) -> Iterator[Sidecar]:
    with Sidecar(
        default_upstream.url,
        env={"SIDECAR_CONFIG": str(config_file)},
        engine=engine,
        admin=True,
    ) as sidecar:
        yield sidecar


def test_metrics_count_exactly_the_requests_sent(observed: Sidecar) -> None:
    before = request_counts(scrape(observed))
    send_known_traffic(observed, rounds=2)
    metrics = scrape(observed)
    counts = request_counts(metrics)
    added = {key: counts[key] - before.get(key, 0.0) for key in counts}
    assert {key: value for key, value in added.items() if value} == {
        ("dev", "200"): 6.0,
        ("default", "200"): 4.0,
        ("down", "502"): 2.0,
    }
    errors = metrics["sidecar_dispatcher_upstream_errors_total"]
    assert [dict(labels)["kind"] for labels in errors] == ["connect_refused"]
    durations = metrics["sidecar_dispatcher_request_duration_seconds_count"]
    assert durations[(("rule", "dev"),)] >= 6.0
    assert metrics["sidecar_dispatcher_config_reloads_total"][(("result", "applied"),)] == 1.0
    assert metrics["sidecar_dispatcher_rules"][()] == 4.0
    assert metrics["sidecar_dispatcher_ready"][()] == 1.0
    assert metrics["sidecar_dispatcher_workers"][()] == 1.0


def test_health_and_readiness_answer_and_nothing_else_is_served(observed: Sidecar) -> None:
    assert observed.admin("/healthz").status == 200
    assert observed.admin("/readyz").status == 200
    assert observed.admin("/").status == 404
    assert observed.admin("/dispatch-me", "POST").status == 405


def test_random_key_values_create_no_new_series(observed: Sidecar) -> None:
    series = len(scrape(observed)["sidecar_dispatcher_requests_total"])
    for number in range(20):
        send(observed.port, "GET", "/", [("environment", f"unknown-{number}")])
    assert len(scrape(observed)["sidecar_dispatcher_requests_total"]) <= series + 1


def test_a_second_sidecar_on_the_same_admin_address_refuses_to_start(
    observed: Sidecar, config_file: Path, default_upstream: Upstream, engine: str
) -> None:
    taken = f"127.0.0.1:{observed.admin_port}"
    second = Sidecar(
        default_upstream.url,
        config=config_file,
        options=[f"dispatcher_admin={taken}"],
        engine=engine,
    )
    assert second.run_to_exit() != 0
    assert f"cannot listen on the admin address {taken}" in second.logs()
    assert observed.admin("/readyz").status == 200  # the first one carries on


def test_the_json_access_log_has_one_object_per_request(
    config_file: Path, default_upstream: Upstream, engine: str
) -> None:
    env = {"SIDECAR_CONFIG": str(config_file), "SIDECAR_ACCESS_LOG": "json"}
    with Sidecar(default_upstream.url, env=env, engine=engine) as sidecar:
        send(sidecar.port, "GET", "/json?token=secret-query", [("environment", "token")])
        send(sidecar.port, "POST", "/json", [("environment", "down")], body=b"x")
        logs = sidecar.wait_for_log('"rule": "down"', timeout=10)
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    assert [(e["rule"], e["method"], e["path"], e["status"]) for e in entries] == [
        ("token", "GET", "/json", 200),
        ("down", "POST", "/json", 502),
    ]
    assert entries[1]["upstream_error_kind"] == "connect_refused"
    assert all(e["duration_ms"] >= 0 and e["client"] == "127.0.0.1" for e in entries)
    assert "s3cret" not in logs  # no header value, in any line
    assert not [line for line in lines if "secret-query" in line]  # mitmdump's own dump has it


def test_readyz_turns_503_at_sigterm_while_a_slow_request_completes(
    config_file: Path, default_upstream: Upstream
) -> None:
    sidecar = Sidecar(
        default_upstream.url,
        env={"SIDECAR_CONFIG": str(config_file)},
        engine="runner",
        admin=True,
    )
    with sidecar:
        assert sidecar.admin("/readyz").status == 200
        answers: list[Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(send(sidecar.port, "GET", "/delay/1.5", timeout=10))
        )
        slow.start()
        default_upstream_wait(default_upstream, "/delay/1.5")
        assert sidecar.process is not None
        signalled = time.monotonic()
        sidecar.process.send_signal(signal.SIGTERM)
        while sidecar.admin("/readyz").status != 503:
            assert time.monotonic() - signalled < 0.5, "/readyz still 200 after SIGTERM"
            time.sleep(0.02)
        slow.join(10)
        assert [answer.status for answer in answers] == [200]
        assert sidecar.process.wait(10) == 0


def default_upstream_wait(upstream: Upstream, path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(received.path == path for received in upstream.received):
        assert time.monotonic() < deadline, f"{path} did not reach the upstream"
        time.sleep(0.02)


def test_two_workers_report_the_sum_and_are_ready_together(
    config_file: Path, default_upstream: Upstream
) -> None:
    admin = free_port()
    sidecar = Sidecar(
        default_upstream.url,
        env={"SIDECAR_CONFIG": str(config_file), "SIDECAR_ADMIN": f"127.0.0.1:{admin}"},
        engine="runner",
    )
    sidecar.arguments += ["--workers", "2"]
    sidecar.admin_port = admin
    with sidecar:
        deadline = time.monotonic() + 30
        while sidecar.admin("/readyz").status != 200:  # the second worker may still start
            assert time.monotonic() < deadline, "two workers never became ready"
            time.sleep(0.1)
        send_known_traffic(sidecar, rounds=5)  # 30 connections, spread by the kernel
        metrics = scrape(sidecar)
        assert request_counts(metrics) == {
            ("dev", "200"): 15.0,
            ("default", "200"): 10.0,
            ("down", "502"): 5.0,
        }
        assert metrics["sidecar_dispatcher_workers"][()] == 2.0
        assert metrics["sidecar_dispatcher_ready"][()] == 2.0
        assert metrics["sidecar_dispatcher_config_reloads_total"][(("result", "applied"),)] == 2
        assert sidecar.admin("/healthz").status == 200
        # The workers' files live in mitmproxy's confdir (writable under a read-only root).
        assert len(list(Path(sidecar.confdir).glob("sidecar-metrics-*"))) == 1
    assert list(Path(sidecar.confdir).glob("sidecar-metrics-*")) == []
