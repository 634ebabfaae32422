"""example/monitoring/: the scrape config, the alerting rules and the dashboard hold up.

`promtool` (Debian package prometheus) checks the scrape config (and its Kubernetes variant,
commented out in the file) and the rules, and runs the rules' unit test. A real sidecar (the
runner, with its admin listener) serves the /metrics in which every metric that the dashboard
and the rules name must exist, and which `promtool check metrics` must find clean. A real
Prometheus then loads the example config and rules, scrapes that sidecar, answers every
dashboard query and evaluates every rule: quiet for a healthy sidecar, pending once a rule's
destination fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sidecar_dispatcher.testing.loopback import START_TIMEOUT

from .processes import REPOSITORY, PrometheusServer, Sidecar, Upstream, require_program

MONITORING = REPOSITORY / "example" / "monitoring"
SCRAPE_CONFIG = MONITORING / "prometheus.yml"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
DEPLOYMENT = REPOSITORY / "example" / "kubernetes" / "base" / "enricher-deployment.yaml"
JOB = "sidecar-dispatcher"  # the scrape job the rules and the dashboard expect
IMAGE_ADMIN = "0.0.0.0:9901"  # the Docker image's SIDECAR_ADMIN
PROGRAM_TIMEOUT = 60.0  # seconds for one promtool run
WAIT = 30.0  # seconds for Prometheus to scrape, evaluate, answer

# Requests sent before the scrape, so that every series the dashboard shows exists: a rule, the
# default destination, and a rule whose destination is down (upstream_errors_total).
TRAFFIC: tuple[tuple[list[tuple[str, str]], int], ...] = (
    ([("environment", "dev")], 200),
    ([], 200),
    ([("environment", "down")], 502),
)
RULES_SENT = {"dev", "default", "down"}

# A metric of ours in PromQL: followed by a selector, a range, a closing parenthesis, a comma,
# white space or the end. Label names, label values, functions and $variables never match.
METRIC = re.compile(r"(?<![\w:])(sidecar_dispatcher_[A-Za-z0-9_:]*)(?=[\s{\[),]|$)")
UP = re.compile(r"(?<![\w:])up(?=[\s{\[)]|$)")
SELECTOR = re.compile(r"(?<![\w:])(sidecar_dispatcher_\w+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
RATED = re.compile(r"\b(?:rate|irate|increase)\(\s*(sidecar_dispatcher_\w+)")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
TARGET_LABELS = {"job", "instance"}  # Prometheus adds them to every scraped series
# What the real Prometheus is asked instead of each dashboard variable.
VARIABLES = {"job": JOB, "instance": ".*", "rule": ".*", "__rate_interval": "30s"}


def program(name: str) -> Path:
    found = shutil.which(name)
    return require_program(Path(found) if found else None, f"{name} (Debian package prometheus)")


def promtool(
    *arguments: str, cwd: Path = REPOSITORY, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program("promtool")), *arguments],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT,
        check=False,
    )


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


# --- the files


def alert_rules() -> list[dict[str, Any]]:
    document: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, and those inside collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in document["panels"]:
        found += [panel, *panel.get("panels", [])]
    return found


def query_variables(document: dict[str, Any]) -> dict[str, str]:
    """The query of each `query` variable, by name."""
    found = {}
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found[variable["name"]] = query["query"] if isinstance(query, dict) else query
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    return [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]


def promql() -> list[tuple[str, str]]:
    """(where, text) for every rule's expression, panel target and variable query."""
    variables = [
        (f"variable {name}", query) for name, query in query_variables(dashboard()).items()
    ]
    rules = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return rules + dashboard_queries() + variables


def metric_names(where: str, text: str) -> set[str]:
    names = METRIC.findall(text)
    assert len(names) == text.count("sidecar_dispatcher_"), f"{where}: a name not parsed: {text}"
    return set(names)


def kubernetes_job() -> dict[str, Any]:
    """The Kubernetes job that prometheus.yml holds commented out, uncommented."""
    lines = SCRAPE_CONFIG.read_text().splitlines()
    start = lines.index(f"  # - job_name: {JOB}")
    block = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        block.append(line[:2] + line[4:])
    jobs = yaml.safe_load("\n".join(block))
    assert isinstance(jobs, list) and len(jobs) == 1, block
    job: dict[str, Any] = jobs[0]
    return job


# --- promtool on the files


def test_promtool_checks_the_alerting_rules() -> None:
    done = promtool("check", "rules", str(ALERTS.relative_to(REPOSITORY)))
    assert done.returncode == 0, output(done)
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout, output(done)


def test_promtool_runs_the_unit_test_of_the_alerts() -> None:
    done = promtool("test", "rules", str(ALERTS_TEST.relative_to(REPOSITORY)))
    assert done.returncode == 0, output(done)
    assert "SUCCESS" in done.stdout, output(done)


def test_the_unit_test_sees_every_alert_fire_and_stay_quiet() -> None:
    document: dict[str, Any] = yaml.safe_load(ALERTS_TEST.read_text())
    assert document["rule_files"] == [ALERTS.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert fired == alerts
    assert quiet == alerts


def test_every_alert_is_on_the_job_and_says_what_to_do() -> None:
    for rule in alert_rules():
        assert f'job="{JOB}"' in rule["expr"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_promtool_checks_the_scrape_config_and_its_rules_from_anywhere(tmp_path: Path) -> None:
    # rule_files are relative to the config file's folder, not to where Prometheus runs
    done = promtool("check", "config", str(SCRAPE_CONFIG), cwd=tmp_path)
    assert done.returncode == 0, output(done)
    assert "SUCCESS: 1 rule files found" in done.stdout, output(done)
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout, output(done)
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == [ALERTS.name]
    assert [job["job_name"] for job in config["scrape_configs"]] == [JOB]


def test_the_kubernetes_variant_passes_promtool_and_finds_the_sidecar(tmp_path: Path) -> None:
    job = kubernetes_job()
    assert job["job_name"] == JOB
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    shutil.copy(ALERTS, tmp_path / ALERTS.name)

    def check(scrape_job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump({**config, "scrape_configs": [scrape_job]})
        )
        return promtool("check", "config", "prometheus.yml", cwd=tmp_path)

    done = check(job)
    if "field kubernetes_sd_configs not found" in done.stdout + done.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check the rest of the job (the
        # relabelling above all) with a static target in its place.
        static = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
        done = check({**static, "static_configs": [{"targets": ["10.1.2.3:9901"]}]})
    assert done.returncode == 0, output(done)

    # It keeps the example deployment's pods and their sidecar container...
    relabel = job["relabel_configs"]
    keep = {r["source_labels"][0]: r["regex"] for r in relabel if r.get("action") == "keep"}
    deployment = next(
        document
        for document in yaml.safe_load_all(DEPLOYMENT.read_text())
        if document and document["kind"] == "Deployment"
    )
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == keep["__meta_kubernetes_pod_label_app"]
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    sidecar = next(
        c for c in containers if c["name"] == keep["__meta_kubernetes_pod_container_name"]
    )
    environment = {variable["name"]: variable.get("value") for variable in sidecar.get("env", [])}
    assert environment.get("SIDECAR_ADMIN", IMAGE_ADMIN).endswith(":9901"), environment
    # ...and scrapes port 9901 of the pod's address (Prometheus anchors relabel regexes).
    (address,) = [r for r in relabel if r.get("target_label") == "__address__"]
    for before, after in (
        ("10.1.2.3:9901", "10.1.2.3:9901"),
        ("10.1.2.3:5000", "10.1.2.3:9901"),
        ("10.1.2.3", "10.1.2.3:9901"),
        ("[fd00::1]:9901", "[fd00::1]:9901"),
    ):
        match = re.fullmatch(address["regex"], before)
        assert match is not None, before
        assert address["replacement"].replace("${1}", match.group(1)) == after


# --- the dashboard


def test_the_dashboard_is_importable() -> None:
    document = dashboard()
    assert document["schemaVersion"] >= 36
    assert document["uid"] and document["title"]
    every = panels(document)
    ids = [panel["id"] for panel in every]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(set(ids)) == len(ids), (
        f"panel ids used twice: {sorted(i for i in ids if ids.count(i) > 1)}"
    )
    taken: dict[tuple[int, int], str] = {}
    for panel in every:
        grid = panel["gridPos"]
        x, y, w, h = (grid[key] for key in "xywh")
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["title"]
        assert x >= 0 and w > 0 and x + w <= 24 and y >= 0 and h > 0, panel["title"]
        for cell in ((column, row) for column in range(x, x + w) for row in range(y, y + h)):
            assert cell not in taken, f"{panel['title']!r} overlaps {taken[cell]!r}"
            taken[cell] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, panel["title"]
        assert all(target["expr"].strip() for target in targets), panel["title"]
        references = [target["refId"] for target in targets]
        assert len(set(references)) == len(references), panel["title"]


def test_the_dashboard_variables_are_defined_and_rule_comes_from_the_requests() -> None:
    document = dashboard()
    variables = {variable["name"]: variable for variable in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    rule = query_variables(document)["rule"]
    assert rule.startswith("label_values(sidecar_dispatcher_requests_total")
    assert rule.endswith(", rule)")
    used = {name for _, text in promql() for name in VARIABLE.findall(text)}
    assert {name for name in used if not name.startswith("__")} <= set(variables)
    assert used <= set(VARIABLES), "a variable the Prometheus test does not fill in"


def test_up_is_named_only_by_the_alert_on_a_target_down() -> None:
    assert {where for where, text in promql() if UP.search(text)} == {"alert SidecarDispatcherDown"}


# --- a real sidecar's /metrics


@dataclass
class Scrape:
    """One /metrics answer: each sample name's family type and label sets."""

    text: str
    types: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                scrape.types[sample.name] = family.type
                scrape.series.setdefault(sample.name, []).append(dict(sample.labels))
        return scrape

    def label_names(self, name: str) -> set[str]:
        return {label for labels in self.series.get(name, []) for label in labels}

    def label_values(self, name: str, label: str) -> set[str]:
        return {labels[label] for labels in self.series.get(name, []) if label in labels}


@pytest.fixture(scope="module")
def monitored(config_file: Path, default_upstream: Upstream) -> Iterator[Sidecar]:
    """The runner with its admin listener, after a request of each kind in TRAFFIC."""
    env = {"SIDECAR_CONFIG": str(config_file)}
    with Sidecar(default_upstream.url, env=env, engine="runner", admin=True) as sidecar:
        for headers, status in TRAFFIC:
            assert sidecar.request("GET", "/", headers=headers).status == status
        yield sidecar


@pytest.fixture(scope="module")
def scrape(monitored: Sidecar) -> Scrape:
    deadline = time.monotonic() + 10.0
    while True:  # counted in the flow's hooks: give the last answer's count a moment
        response = monitored.admin("/metrics")
        assert response.status == 200
        scrape = Scrape.parse(response.body.decode())
        counted = scrape.label_values("sidecar_dispatcher_requests_total", "rule")
        if counted >= RULES_SENT and "sidecar_dispatcher_upstream_errors_total" in scrape.types:
            return scrape
        if time.monotonic() > deadline:
            raise AssertionError(f"the traffic sent is not all counted:\n{scrape.text}")
        time.sleep(0.1)


def test_promtool_finds_the_scrape_clean(scrape: Scrape) -> None:
    done = promtool("check", "metrics", stdin=scrape.text)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), output(done)


def test_every_metric_the_dashboard_and_the_alerts_name_is_exposed(scrape: Scrape) -> None:
    missing = {
        (where, name)
        for where, text in promql()
        for name in metric_names(where, text)
        if name not in scrape.types
    }
    for rule in alert_rules():  # the annotations name metrics to look at, too
        for text in rule["annotations"].values():
            missing |= {(rule["alert"], n) for n in METRIC.findall(text) if n not in scrape.types}
    assert not missing, f"not in /metrics: {sorted(missing)}\n{scrape.text}"


def test_the_dashboard_shows_every_metric_exposed(scrape: Scrape) -> None:
    shown = {name for where, text in dashboard_queries() for name in metric_names(where, text)}
    exposed = {
        name
        for name, kind in scrape.types.items()
        if not name.endswith("_created")  # prometheus-client's creation times
        and not (kind == "histogram" and not name.endswith("_bucket"))
    }
    assert exposed - shown == set()


def test_queries_match_and_group_by_labels_the_metrics_have(scrape: Scrape) -> None:
    every_label = {label for name in scrape.series for label in scrape.label_names(name)}
    for where, text in promql():
        for name, matchers in SELECTOR.findall(text):
            used = set(MATCHER_LABEL.findall(matchers))
            assert used <= scrape.label_names(name) | TARGET_LABELS, (where, name, used)
        for grouping in GROUPING.findall(text):
            used = {label.strip() for label in grouping.split(",") if label.strip()}
            assert used <= every_label | TARGET_LABELS, (where, used)
        if "histogram_quantile(" in text:
            assert re.search(r"\bby\s*\([^)]*\ble\b", text), f"{where}: grouped without le"


def test_only_counters_and_histogram_series_are_rated(scrape: Scrape) -> None:
    for where, text in promql():
        for name in RATED.findall(text):
            assert scrape.types.get(name) in ("counter", "histogram"), (where, name)


# --- a real Prometheus with the example config and rules


def filled_in(text: str) -> str:
    return VARIABLE.sub(lambda match: VARIABLES[match.group(1)], text)


def alerts(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = prometheus.api("alerts")["alerts"]
    return found


@pytest.fixture
def prometheus(monitored: Sidecar) -> Iterator[PrometheusServer]:
    """The example config and rules, every second, on the monitored sidecar's admin port."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{monitored.admin_port}"]}]
    with tempfile.TemporaryDirectory(prefix="prometheus-test-") as workdir:
        path = Path(workdir) / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        with PrometheusServer(path, Path(workdir)) as server:
            yield server


def test_a_real_prometheus_answers_every_dashboard_query_and_evaluates_the_alerts(
    prometheus: PrometheusServer, monitored: Sidecar
) -> None:
    def scraped_three_times() -> bool:
        counts = prometheus.query(f'count_over_time(up{{job="{JOB}"}}[1m])')
        return bool(counts) and float(counts[0]["value"][1]) >= 3

    prometheus.wait_for("scraping the sidecar", scraped_three_times, timeout=START_TIMEOUT)
    assert [float(up["value"][1]) for up in prometheus.query(f'up{{job="{JOB}"}}')] == [1.0]

    for where, expr in dashboard_queries():
        assert prometheus.query(filled_in(expr)), f"{where}: no result for {filled_in(expr)}"
    for name, query in query_variables(dashboard()).items():
        match = LABEL_VALUES.fullmatch(query)
        assert match is not None, (name, query)
        selector, label = filled_in(match.group(1)), match.group(2)
        values = prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert values, f"variable {name}: no values for {query}"
        if name == "rule":
            assert set(values) >= RULES_SENT

    def every_rule_evaluated() -> bool:
        groups = prometheus.api("rules")["groups"]
        health = [rule["health"] for group in groups for rule in group["rules"]]
        return len(health) == len(alert_rules()) and set(health) == {"ok"}

    prometheus.wait_for("evaluating every rule without error", every_rule_evaluated)
    assert alerts(prometheus) == [], "an alert on a healthy sidecar"

    # The down rule's destination fails well above the 0.1 request/s floor: pending (for: 5m).
    for _ in range(60):
        assert monitored.request("GET", "/", headers=[("environment", "down")]).status == 502

    def error_ratio_pending() -> bool:
        return any(
            alert["labels"]["alertname"] == "SidecarDispatcherHighErrorRatio"
            and alert["labels"]["rule"] == "down"
            and alert["state"] == "pending"
            for alert in alerts(prometheus)
        )

    prometheus.wait_for("pending SidecarDispatcherHighErrorRatio{rule=down}", error_ratio_pending)
    assert {alert["labels"]["alertname"] for alert in alerts(prometheus)} == {
        "SidecarDispatcherHighErrorRatio"
    }
