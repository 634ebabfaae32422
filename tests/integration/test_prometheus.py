"""A real Prometheus server scrapes a real sidecar and counts exactly the requests sent.

Debian's `prometheus` runs on loopback with a one-second scrape interval against the sidecar's
admin listener (one process, then two workers); the test sends known traffic and asks
Prometheus' HTTP API until it reports those counts per rule and status code.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar_dispatcher.testing.loopback import send

from .processes import PrometheusServer, Sidecar, Upstream

# Per round: the requests sent, with the rule and status each should be counted under.
TRAFFIC = (
    (("dev", "dev", 200),) * 30 + ((None, "default", 200),) * 20 + (("down", "down", 502),) * 5
)


def scrape_config(target: str, folder: Path) -> Path:
    """A config scraping `target` every second."""
    path = folder / "prometheus.yml"
    path.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: sidecar\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    return path


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def scraped(
    request: pytest.FixtureRequest, config_file: Path, default_upstream: Upstream
) -> Iterator[tuple[Sidecar, PrometheusServer]]:
    workers: int = request.param
    sidecar = Sidecar(
        default_upstream.url, env={"SIDECAR_CONFIG": str(config_file)}, engine="runner", admin=True
    )
    if workers > 1:
        sidecar.arguments += ["--workers", str(workers)]
    with sidecar, tempfile.TemporaryDirectory(prefix="prometheus-test-") as folder:
        wait_ready(sidecar)
        config = scrape_config(f"127.0.0.1:{sidecar.admin_port}", Path(folder))
        with PrometheusServer(config, Path(folder)) as prometheus:
            yield sidecar, prometheus


def wait_ready(sidecar: Sidecar, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sidecar.admin("/readyz").status != 200:
        assert time.monotonic() < deadline, "the sidecar never became ready"
        time.sleep(0.1)


def counts(prometheus: PrometheusServer) -> dict[tuple[str, str], float]:
    return {
        (series["metric"]["rule"], series["metric"]["code"]): float(series["value"][1])
        for series in prometheus.query("sidecar_dispatcher_requests_total")
    }


def test_prometheus_reports_exactly_the_requests_sent(
    scraped: tuple[Sidecar, PrometheusServer],
) -> None:
    sidecar, prometheus = scraped
    for key, _rule, status in TRAFFIC:
        headers = [("environment", key)] if key else []
        assert send(sidecar.port, "GET", "/scraped", headers).status == status
    expected = {("dev", "200"): 30.0, ("default", "200"): 20.0, ("down", "502"): 5.0}
    prometheus.wait_for(f"counting {expected}", lambda: counts(prometheus) == expected)
    (errors,) = prometheus.query("sidecar_dispatcher_upstream_errors_total")
    assert (errors["metric"]["rule"], errors["metric"]["kind"]) == ("down", "connect_refused")
    assert float(errors["value"][1]) == 5.0
    (ready,) = prometheus.query("sidecar_dispatcher_ready == sidecar_dispatcher_workers")
    assert float(ready["value"][1]) >= 1.0
