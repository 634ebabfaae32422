"""`sidecar-dispatcher validate` and `explain`, run as users run them."""

from __future__ import annotations

import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from sidecar_dispatcher.core.header_edits import HeaderList
from sidecar_dispatcher.core.model import HeaderPatch
from sidecar_dispatcher.testing.configs import dispatch_config
from sidecar_dispatcher.tools.cli import main

from .conftest import WriteConfig, run_command

CONFIG = dispatch_config("http://default.test:8081", dev="http://dev.test:8082/base")


run = run_command


def test_validate_good_config_exits_0_with_a_summary(write_config: WriteConfig) -> None:
    path = write_config(CONFIG)
    result = run("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{path}: OK"
    assert "key:         environment" in result.stdout
    assert "default:     http://default.test:8081" in result.stdout
    assert "dev  → http://dev.test:8082/base  patches: Host, dispatched" in result.stdout
    assert "qa   → http://default.test:8081 (default)  patches: dispatched" in result.stdout


def test_validate_bad_config_prints_every_error_one_per_line(write_config: WriteConfig) -> None:
    path = write_config("""
        key: bad key
        destination: example.org
        rewrites:
          dev:
            patch:
              - key: Host
                value: x
    """)
    result = run("validate", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:1:6: key: 'bad key' is not a valid header name (letters, digits and "
        "!#$%&'*+-.^_`|~ only, no spaces or colons)",
        f"{path}:2:14: destination: expected an absolute http:// or https:// URL, got "
        "'example.org' (did you mean 'http://example.org'?)",
        f"{path}:7:9: rewrites.dev.patch[0].value: unknown key 'value', did you mean 'val'? "
        "(expected one of 'key', 'val')",
    ]


def test_validate_defaults_to_sidecar_config_then_config_yaml(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path = write_config(CONFIG)
    assert run("validate", env={"SIDECAR_CONFIG": str(path)}).stdout.startswith(f"{path}: OK")
    (tmp_path / "config.yaml").write_text("key: environment\n")
    result = run("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == "config.yaml:1:1: destination: missing required key 'destination'\n"


def test_validate_missing_file(tmp_path: Path) -> None:
    result = run("validate", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert result.stdout == f"{tmp_path / 'absent.yaml'}:1:1: config file not found\n"


def test_explain_dispatched_request(write_config: WriteConfig) -> None:
    path = write_config(CONFIG)
    result = run(
        "explain",
        "--config",
        str(path),
        "-H",
        "environment: dev",
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-X",
        "PATCH",
        "/items?id=7",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "rule:         dev (environment: dev)",
        "destination:  http://dev.test:8082/base",
        "upstream:     PATCH http://dev.test:8082/base/items?id=7",
        "headers:",
        "  environment: dev",
        "  X-Forwarded-For: 203.0.113.9, 127.0.0.1",
        "  Host: example.com",
        "  dispatched: true",
    ]


def test_explain_default_says_why(write_config: WriteConfig) -> None:
    path = write_config(CONFIG)
    result = run("explain", "--config", str(path), "-H", "Environment: prod", "/")
    assert result.stdout.splitlines()[:3] == [
        "rule:         default (no rule for environment: prod)",
        "destination:  http://default.test:8081",
        "upstream:     GET http://default.test:8081/",
    ]
    no_header = run("explain", "--config", str(path), "--client-ip", "", "/x")
    assert no_header.stdout.splitlines()[0] == "rule:         default (no environment header)"
    assert "X-Forwarded-For" not in no_header.stdout


def test_explain_keep_host_header_keeps_the_clients_host(write_config: WriteConfig) -> None:
    path = write_config(CONFIG)
    result = run(
        "explain",
        "--config",
        str(path),
        "--keep-host-header",
        "-H",
        "Host: app.test",
        "-H",
        "environment: qa",
        "/",
    )
    assert "  Host: app.test" in result.stdout.splitlines()


def test_explain_conflicting_key_headers_shows_the_refusal(write_config: WriteConfig) -> None:
    path = write_config(CONFIG)
    result = run(
        "explain", "--config", str(path), "-H", "environment: dev", "-H", "environment: qa", "/"
    )
    assert result.stdout.splitlines()[0].startswith("refused:      400 Bad Request")


def test_explain_bad_config_and_bad_header(write_config: WriteConfig) -> None:
    bad = write_config("key: environment\n")
    result = run("explain", "--config", str(bad), "/")
    assert result.returncode == 1
    assert "destination: missing required key" in result.stderr
    malformed = run("explain", "--config", str(write_config(CONFIG)), "-H", "no colon", "/")
    assert malformed.returncode == 2
    assert "'no colon' is not of the form 'Name: value'" in malformed.stderr


@pytest.mark.spawns
def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "sidecar-dispatcher"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "validate" in result.stdout
    assert "explain" in result.stdout


def test_unknown_run_option_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--no-such-option"])
    assert exited.value.code == 2


def test_header_list_replaces_in_place_like_mitmproxy() -> None:
    headers = HeaderList([("A", "1"), ("b", "2"), ("a", "3")])
    headers.apply([HeaderPatch("a", "new")])
    headers.apply([HeaderPatch("C", "4")])
    assert headers.fields == [("A", "new"), ("b", "2"), ("C", "4")]


def test_version_comes_from_the_package_metadata() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"sidecar-dispatcher {metadata.version('sidecar-dispatcher')}"


@pytest.mark.spawns
def test_the_command_and_the_workers_supervisor_do_not_load_mitmproxy() -> None:
    # A supervisor of N workers only starts and signals them: mitmproxy would cost it ~70 MiB.
    probe = (
        "import sys, sidecar_dispatcher.tools.cli, sidecar_dispatcher.runner.run_command; "
        "print(sorted(name for name in sys.modules if name.partition('.')[0] == 'mitmproxy'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# --- routes and unmatched

ROUTES = Path(__file__).resolve().parent / "fixtures" / "good-configs" / "routes.yaml"


def test_validate_without_routes_prints_what_it_always_did(write_config: WriteConfig) -> None:
    path = write_config(CONFIG)
    assert run("validate", str(path)).stdout == (
        f"{path}: OK\n"
        "  key:         environment\n"
        "  default:     http://default.test:8081\n"
        "  rules:       2\n"
        "    dev  → http://dev.test:8082/base  patches: Host, dispatched\n"
        "    qa   → http://default.test:8081 (default)  patches: dispatched\n"
    )


def test_validate_lists_the_routes_in_order_before_the_rules() -> None:
    result = run("validate", str(ROUTES))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[1:] == [
        "  key:         environment",
        "  default:     http://default.test:8081",
        "  routes:      3, tried in order before the rules",
        "    1. health",
        "       match:        path exact '/health' and method GET or HEAD",
        "       destination:  http://health.test:8080",
        "    2. canary",
        "       match:        x-tenant prefix 'eu-' and path prefix '/api/'",
        "       split:        weight 90  → http://stable.test:8080",
        "                     weight 10  → http://canary.test:8080",
        "                     sticky on x-user",
        "       path:         /api/ → /v2/",
        "       request:      remove Authorization; set X-Env; append Via",
        "       response:     remove Server; set X-Served-By",
        "       timeout:      2.5 s",
        "       mirror:       http://shadow.test:8080 (100% of requests)",
        "    3. development",
        "       match:        environment one of 'development', 'devel'",
        "       destination:  http://dev.test:8082",
        "  rules:       1",
        "    dev  → http://dev.test:8082  patches: dispatched",
    ]


def test_validate_describes_every_kind_of_match_and_the_unmatched_answer(
    write_config: WriteConfig,
) -> None:
    path = write_config("""
        key: environment
        unmatched: {status: 421, body: "no route\\n"}
        routes:
          - name: kinds
            match:
              headers:
                X-User: alice
                x-session: {regex: "^[a-f0-9]{8}$"}
                x-debug: {present: true}
                x-probe: {present: false}
              path: {regex: "^/v[0-9]+/"}
              methods: [post, GET]
            destination: http://kinds.test
          - name: random
            split:
              - {destination: http://a.test, weight: 1}
              - {destination: http://b.test, weight: 1000}
          - name: last
            destination: http://last.test
    """)
    lines = run("validate", str(path)).stdout.splitlines()
    assert lines[2] == "  default:     none (see unmatched)"
    assert lines[5] == (
        "       match:        x-user exact 'alice' and x-session regex '^[a-f0-9]{8}$' and "
        "x-debug present and x-probe absent and path regex '^/v[0-9]+/' and method GET or POST"
    )
    assert lines[7:12] == [
        "    2. random",
        "       match:        every request",
        "       split:        weight 1     → http://a.test",
        "                     weight 1000  → http://b.test",
        "                     random by weight",
    ]
    assert lines[12] == "                     so nothing after this route is used"
    assert lines[-2:] == [
        "  rules:       0",
        "  unmatched:   421 from the sidecar, body 'no route\\n'",
    ]


def test_validate_says_a_route_without_destination_uses_the_default(
    write_config: WriteConfig,
) -> None:
    path = write_config("""
        key: environment
        destination: http://default.test
        routes:
          - name: edits
            match: {headers: {x-edit: {present: true}}}
            append: [{key: Via, val: sidecar}]
    """)
    assert "       destination:  http://default.test (default)" in run("validate", str(path)).stdout


def explain_routes(*arguments: str) -> list[str]:
    return run("explain", "--config", str(ROUTES), *arguments).stdout.splitlines()


def test_explain_a_route_with_a_sticky_split_and_everything_it_does() -> None:
    assert explain_routes(
        "-H",
        "x-tenant: eu-west",
        "-H",
        "x-user: ray",
        "-H",
        "Authorization: Bearer t",
        "-H",
        "Via: 1.1 edge",
        "/api/items?id=7",
    ) == [
        "route:        canary (route canary matched, split member 2 of 2 (sticky on x-user))",
        "split:        member 2 of 2, weight 10 of 100: sticky on x-user, so every request with "
        "x-user: ray goes there",
        "destination:  http://canary.test:8080",
        "upstream:     GET http://canary.test:8080/v2/items?id=7",
        "headers:",
        "  x-tenant: eu-west",
        "  x-user: ray",
        "  Via: 1.1 edge",
        "  Host: canary.test:8080",
        "  X-Forwarded-For: 127.0.0.1",
        "  X-Env: eu",
        "  Via: sidecar",
        "response:     remove Server; set X-Served-By: canary",
        "timeout:      2.5 s for the response headers, else 504 from the sidecar",
        "mirror:       http://shadow.test:8080 (100% of requests): a copy of this request goes "
        "there, its response discarded",
    ]


def test_explain_verbose_says_why_each_earlier_route_did_not_match() -> None:
    request = ("-H", "x-tenant: eu-west", "-H", "x-user: alice", "/api/items")
    quiet = explain_routes(*request)
    assert quiet[0].startswith("route:        canary (")
    verbose = explain_routes("-v", *request)
    assert verbose[0] == "not matched:  health: path exact '/health' does not match '/api/items'"
    assert verbose[1:] == quiet
    to_the_rule = explain_routes("--verbose", "-X", "POST", "-H", "environment: dev", "/health")
    assert to_the_rule[:5] == [
        "not matched:  health: method POST not in GET, HEAD",
        "              canary: path prefix '/api/' does not match '/health'; "
        "x-tenant prefix 'eu-' does not hold",
        "              development: environment one of 'development', 'devel' does not hold",
        "rule:         dev (environment: dev)",
        "destination:  http://dev.test:8082",
    ]
    assert not any(line.startswith(("split:", "response:", "timeout:")) for line in to_the_rule)


def test_explain_passes_the_method_to_the_routes() -> None:
    assert explain_routes("-X", "HEAD", "/health")[:3] == [
        "route:        health (route health matched)",
        "destination:  http://health.test:8080",
        "upstream:     HEAD http://health.test:8080/health",
    ]
    assert explain_routes("-X", "DELETE", "/health")[0] == (
        "rule:         default (no environment header)"
    )


def test_explain_a_split_without_its_sticky_header_draws_by_weight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.95)  # the last 10 of 100: the canary
    lines = explain_routes("-H", "x-tenant: eu-1", "/api/")
    assert lines[:3] == [
        "route:        canary (route canary matched, split member 2 of 2 (by weight))",
        "split:        member 2 of 2, weight 10 of 100: no x-user header to stick on, "
        "so drawn by weight",
        "destination:  http://canary.test:8080",
    ]


def test_explain_a_split_without_sticky_and_a_mirror_that_skips_this_request(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config("""
        key: environment
        destination: http://default.test
        routes:
          - name: canary
            split:
              - {destination: http://stable.test, weight: 3}
              - {destination: http://canary.test, weight: 1}
            mirror: {destination: http://shadow.test, percent: 25}
    """)
    monkeypatch.setattr(random, "random", lambda: 0.5)
    lines = run("explain", "--config", str(path), "/").stdout.splitlines()
    assert (
        lines[1] == "split:        member 1 of 2, weight 3 of 4: drawn by weight for each request"
    )
    assert lines[-1] == (
        "mirror:       http://shadow.test (25% of requests): this request is not copied "
        "(drawn for each request)"
    )


def test_explain_the_unmatched_answer(write_config: WriteConfig) -> None:
    path = write_config("""
        key: environment
        unmatched: {status: 404, body: "no route\\n"}
        routes:
          - name: api
            match: {path: {prefix: /api/}}
            destination: http://api.test
    """)
    result = run("explain", "--config", str(path), "-v", "-H", "environment: prod", "/web")
    assert result.stdout.splitlines() == [
        "not matched:  api: path prefix '/api/' does not match '/web'",
        "rule:         unmatched (no rule for environment: prod)",
        "answer:       404 from the sidecar, body 'no route\\n' (unmatched)",
        "upstream:     nothing is sent",
    ]
