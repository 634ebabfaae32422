"""End to end: failures inside the addon and bad configs never reach the wrong upstream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sidecar_dispatcher.testing.loopback import free_port

from ..bad_configs import bad_config
from .processes import Sidecar, Upstream

EXPLODING = Path(__file__).with_name("exploding_dispatcher.py")


def test_exception_in_dispatch_answers_502_and_reaches_no_upstream(
    config_file: Path, default_upstream: Upstream, dev_upstream: Upstream
) -> None:
    with Sidecar(default_upstream.url, config=config_file, script=EXPLODING) as process:
        # mitmdump exits when an ERROR is logged before its start-up has finished, which
        # lasts a little past the moment it listens: let it finish before the failure.
        assert process.request("GET", "/").status == 200
        time.sleep(0.5)
        before = len(default_upstream.received) + len(dev_upstream.received)
        response = process.request("GET", "/", [("environment", "dev"), ("X-Test-Explode", "1")])
        assert response.status == 502
        assert response.header("Content-Type") == "text/plain; charset=utf-8"
        assert b"sidecar dispatcher: dispatch failed (RuntimeError; see the log)" in response.body
        assert b"routing exploded on purpose" not in response.body  # details only in the log
        assert len(default_upstream.received) + len(dev_upstream.received) == before
        logs = process.wait_for_log("Traceback")
        assert "dispatch failed for GET /" in logs
        assert "RuntimeError: routing exploded on purpose" in logs
        assert process.request("GET", "/", [("environment", "dev")]).json()["upstream"] == "dev"


# From the catalogue of bad configs, one of each kind of problem: each starts four sidecars.
REFUSED = (
    "broken-yaml",
    "unknown-rule-key",
    "bad-destination-scheme",
    "header-injection-crlf",
    "missing-key",
    "patch-key-not-a-header-name",
    "null-value",
    "empty",
)


@pytest.mark.parametrize("via", ["SIDECAR_CONFIG", "--set"])
@pytest.mark.parametrize("name", REFUSED)
def test_bad_config_refuses_to_start(name: str, via: str, engine: str) -> None:
    path = bad_config(name).path
    if via == "--set":
        process = Sidecar("http://127.0.0.1:9", config=path, engine=engine)
    else:
        process = Sidecar("http://127.0.0.1:9", env={"SIDECAR_CONFIG": str(path)}, engine=engine)
    assert process.run_to_exit() != 0
    logs = process.logs()
    for expected in bad_config(name).located():
        assert expected in logs, logs
    assert "Invalid dispatcher config" in logs


def test_missing_config_file_refuses_to_start(tmp_path: Path, engine: str) -> None:
    path = tmp_path / "absent.yaml"
    process = Sidecar("http://127.0.0.1:9", env={"SIDECAR_CONFIG": str(path)}, engine=engine)
    assert process.run_to_exit() != 0
    assert f"{path}:1:1: config file not found" in process.logs()


def test_without_sidecar_config_it_reads_config_yaml_in_the_working_directory(
    engine: str,
) -> None:
    # The repository's own config.yaml: the sidecar starts from the repository root.
    target = f"http://127.0.0.1:{free_port()}"
    with Sidecar(target, env={"SIDECAR_CONFIG": ""}, engine=engine) as process:
        assert "dispatcher config config.yaml loaded" in process.logs()


def test_non_utf8_config_refuses_to_start(tmp_path: Path, engine: str) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"key: environment\ndestination: http://caf\xe9.test\n")
    process = Sidecar("http://127.0.0.1:9", config=path, engine=engine)
    assert process.run_to_exit() != 0
    assert f"{path}:2:24: config file is not valid UTF-8 text" in process.logs()


def test_unknown_logging_level_refuses_to_start(config_file: Path, engine: str) -> None:
    process = Sidecar(
        "http://127.0.0.1:9",
        config=config_file,
        env={"SIDECAR_LOGGING_LEVEL": "LOUD"},
        engine=engine,
    )
    assert process.run_to_exit() != 0
    assert "SIDECAR_LOGGING_LEVEL='LOUD' is not one of" in process.logs()


def test_upstream_ca_that_cannot_be_loaded_refuses_to_start(
    config_file: Path, tmp_path: Path, engine: str
) -> None:
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("not a certificate\n")
    for ca in (tmp_path / "absent.pem", not_a_certificate):
        process = Sidecar(
            "http://127.0.0.1:9",
            config=config_file,
            options=[f"ssl_verify_upstream_trusted_ca={ca}"],
            engine=engine,
        )
        assert process.run_to_exit() != 0
        assert f"cannot load the CA for upstream TLS, ssl_verify_upstream_trusted_ca={ca}" in (
            process.logs()
        )
