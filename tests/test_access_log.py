"""The access log: one line per completed request, text or JSON, never a header value."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from sidecar_dispatcher import Dispatcher

from .flows import Harness, HttpErrorHook, HttpResponseHook, answer, make_flow


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sidecar_dispatcher.access_log"]


def test_text_line_of_a_default_request_names_status_and_duration(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        flow = harness.dispatch(make_flow(("environment", "prod")))
        harness.hook(HttpResponseHook(answer(flow, 404, seconds=0.25)))
    assert info_lines(caplog) == [
        "default → http://default.test:8081 (no rule for environment: prod) GET /x "
        "patched=[Host, X-Forwarded-For] 404 250.0ms"
    ]


def test_an_upstream_failure_is_logged_once_as_a_502_with_its_kind(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        flow = harness.dispatch(make_flow(("environment", "dev")))
        flow.request.timestamp_start = time.time()
        flow.error = tflow.terr("[Errno 111] Connect call failed ('10.0.0.9', 8082)")
        harness.hook(HttpErrorHook(flow))
    (line,) = info_lines(caplog)
    assert line.startswith("dev → http://dev.test:8082/base (environment: dev) GET /base/x ")
    assert " 502 " in line
    assert line.endswith("upstream_error=connect_refused")


def test_a_response_followed_by_an_error_is_logged_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        flow = harness.dispatch(make_flow())
        harness.hook(HttpResponseHook(answer(flow)))
        flow.error = tflow.terr("Client disconnected.")
        harness.hook(HttpErrorHook(flow))
    assert len(info_lines(caplog)) == 1


def test_a_refused_request_is_logged_without_a_rule(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        flow = harness.dispatch(make_flow(("environment", "dev"), ("environment", "qa")))
        assert flow.response is not None
        harness.hook(HttpResponseHook(flow))
    (line,) = info_lines(caplog)
    assert line.startswith("refused GET /x patched=[] 400 ")


def test_client_controlled_text_is_escaped_in_the_text_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # NEL (U+0085, a latin-1 byte) ends a line for many log viewers; CR and LF never get here.
    forged = "prod\x85[10:00:00.000] admin → http://evil (forged) GET / 200"
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        flow = harness.dispatch(make_flow(("environment", forged)))
        harness.hook(HttpResponseHook(answer(flow)))
    (line,) = info_lines(caplog)
    assert "\n" not in line
    assert "no rule for environment: prod\\x85[10:00:00.000] admin" in line


def test_json_lines_go_to_stdout_with_the_documented_fields(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.tctx.configure(harness.dispatcher, dispatcher_access_log="json")
    flow = harness.dispatch(make_flow(("environment", "token")))
    harness.hook(HttpResponseHook(answer(flow, 201, seconds=0.002)))
    failed = harness.dispatch(make_flow(("environment", "dev"), path="/api/items?token=abc"))
    failed.error = tflow.terr("Certificate verify failed: hostname mismatch")
    harness.hook(HttpErrorHook(failed))
    harness.tctx.configure(harness.dispatcher, dispatcher_access_log="text")
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert {k: first[k] for k in ("rule", "destination", "method", "path", "status")} == {
        "rule": "token",
        "destination": "https://secure.test",
        "method": "GET",
        "path": "/x",
        "status": 201,
    }
    assert first["duration_ms"] == pytest.approx(2.0)
    assert first["client"] == "127.0.0.1"
    assert first["patched"] == ["Host", "X-Forwarded-For", "Authorization", "X-Twice", "x-twice"]
    assert "upstream_error" not in first
    assert "s3cret" not in json.dumps(first)
    assert second["path"] == "/base/api/items"  # as sent upstream, without the query string
    assert second["status"] == 502
    assert second["upstream_error"] == "Certificate verify failed: hostname mismatch"
    assert second["upstream_error_kind"] == "tls"


def test_off_writes_nothing(
    harness: Harness, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.tctx.configure(harness.dispatcher, dispatcher_access_log="off")
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        harness.hook(HttpResponseHook(answer(harness.dispatch(make_flow()))))
    assert info_lines(caplog) == []
    assert capsys.readouterr().out == ""


def test_the_format_defaults_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, config_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_ACCESS_LOG", "JSON")
    with taddons.context(Proxyserver(), Dispatcher()) as tctx:
        assert tctx.options.dispatcher_access_log == "json"


def test_an_unknown_format_in_the_environment_is_an_options_error(
    monkeypatch: pytest.MonkeyPatch, config_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_ACCESS_LOG", "xml")
    dispatcher = Dispatcher()
    with (
        taddons.context(Proxyserver(), dispatcher) as tctx,
        pytest.raises(exceptions.OptionsError, match="SIDECAR_ACCESS_LOG='xml' is not one of"),
    ):
        tctx.configure(dispatcher, dispatcher_config=str(config_path))
