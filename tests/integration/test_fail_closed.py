"""End to end: failures inside the addon and bad configs never reach the wrong upstream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .processes import Sidecar, Upstream, free_port

EXPLODING = Path(__file__).with_name("exploding_dispatcher.py")


def test_exception_in_dispatch_answers_502_and_reaches_no_upstream(
    config_file: Path, default_upstream: Upstream, dev_upstream: Upstream
) -> None:
    process = Sidecar(default_upstream.url, config=config_file, script=EXPLODING).start()
    try:
        # mitmdump exits when an ERROR is logged before its start-up has finished, which
        # lasts a little past the moment it listens: let it finish before the failure.
        assert process.request("GET", "/").status == 200
        time.sleep(0.5)
        before = len(default_upstream.received) + len(dev_upstream.received)
        response = process.request("GET", "/", [("environment", "dev"), ("X-Test-Explode", "1")])
        assert response.status == 502
        assert response.header("Content-Type") == "text/plain; charset=utf-8"
        assert b"sidecar dispatcher: dispatch failed" in response.body
        assert b"routing exploded on purpose" in response.body
        assert len(default_upstream.received) + len(dev_upstream.received) == before
        logs = process.wait_for_log("Traceback")
        assert "dispatch failed for GET /" in logs
        assert "RuntimeError: routing exploded on purpose" in logs
        assert process.request("GET", "/", [("environment", "dev")]).json()["upstream"] == "dev"
    finally:
        process.stop()


GOOD_HEAD = "key: environment\ndestination: http://127.0.0.1:9\n"

BAD_CONFIGS = {
    "broken-yaml": (
        GOOD_HEAD + "rewrites:\n  dev:\n    patch:\n      - key: Host\n     val: x\n",
        ":7:6: invalid YAML",
    ),
    "unknown-key": (
        GOOD_HEAD + "rewrites:\n  dev:\n    destnation: http://a.test\n",
        ":5:5: rewrites.dev.destnation: unknown key 'destnation', did you mean 'destination'?",
    ),
    "bad-destination": (
        "key: environment\ndestination: example.org\n",
        ":2:14: destination: expected an absolute http:// or https:// URL, got 'example.org'",
    ),
    "header-injection": (
        GOOD_HEAD + 'rewrites:\n  dev:\n    patch:\n      - {key: X-A, val: "a\\r\\nX-B: 1"}\n',
        ":6:25: rewrites.dev.patch[0].val: header value contains a carriage return (CR)",
    ),
    "missing-key": ("destination: http://a.test\n", ":1:1: key: missing required key 'key'"),
    "bad-header-name": (
        GOOD_HEAD + "rewrites:\n  dev:\n    patch:\n      - {key: Bad Name, val: x}\n",
        ":6:15: rewrites.dev.patch[0].key: 'Bad Name' is not a valid header name",
    ),
    "null-value": (
        GOOD_HEAD + "rewrites:\n  dev:\n    patch:\n      - key: X-A\n        val:\n",
        ":7:13: rewrites.dev.patch[0].val: expected a header value",
    ),
    "empty": ("", ":1:1: config is empty"),
}


@pytest.mark.parametrize("via", ["SIDECAR_CONFIG", "--set"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_refuses_to_start(tmp_path: Path, case: str, via: str, engine: str) -> None:
    text, expected = BAD_CONFIGS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    if via == "--set":
        process = Sidecar("http://127.0.0.1:9", config=path, engine=engine)
    else:
        process = Sidecar("http://127.0.0.1:9", env={"SIDECAR_CONFIG": str(path)}, engine=engine)
    assert process.run_to_exit() != 0
    logs = process.logs()
    assert f"{path}{expected}" in logs, logs
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
    process = Sidecar(
        f"http://127.0.0.1:{free_port()}", env={"SIDECAR_CONFIG": ""}, engine=engine
    ).start()
    try:
        assert "dispatcher config config.yaml loaded" in process.logs()
    finally:
        process.stop()


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
