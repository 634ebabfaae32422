"""`sidecar-dispatcher validate` and `explain`, run as users run them."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from sidecar_dispatcher.cli import main
from sidecar_dispatcher.header_list import HeaderList
from sidecar_dispatcher.testing.configs import dispatch_config

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
    headers.set("a", "new")
    headers.set("C", "4")
    assert headers.fields == [("A", "new"), ("b", "2"), ("C", "4")]


def test_version_comes_from_the_package_metadata() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"sidecar-dispatcher {metadata.version('sidecar-dispatcher')}"


def test_the_command_and_the_workers_supervisor_do_not_load_mitmproxy() -> None:
    # A supervisor of N workers only starts and signals them: mitmproxy would cost it ~70 MiB.
    probe = (
        "import sys, sidecar_dispatcher.cli, sidecar_dispatcher.supervisor; "
        "print(sorted(name for name in sys.modules if name.partition('.')[0] == 'mitmproxy'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
