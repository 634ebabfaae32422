"""The addon inside mitmproxy's test harness: flows in, dispatched flows out."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from mitmproxy import exceptions, hooks, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.addons.termlog import TermLog
from mitmproxy.test import taddons, tflow

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher.core.model import Destination
from sidecar_dispatcher.proxy.router import DISPATCHED_MARKER
from sidecar_dispatcher.proxy.startup import MITMWEB_DEFAULT_COLUMNS

from .conftest import WriteConfig
from .flows import (
    CONFIG,
    Harness,
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpResponseHook,
    answer,
    body,
    invoke,
    make_flow,
)

# --- configuration


def test_config_option_defaults_to_sidecar_config(
    monkeypatch: pytest.MonkeyPatch, config_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_CONFIG", str(config_path))
    dispatcher = Dispatcher()
    with taddons.context(dispatcher) as tctx:
        assert tctx.options.dispatcher_config == str(config_path)
        invoke(tctx, dispatcher, hooks.ConfigureHook({"dispatcher_config"}))  # as at start-up
        assert dispatcher.rules is not None
        assert set(dispatcher.rules.rewrites) == {"dev", "qa", "token"}


def test_config_option_defaults_to_config_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIDECAR_CONFIG", raising=False)
    with taddons.context(Dispatcher()) as tctx:
        assert tctx.options.dispatcher_config == "config.yaml"


def test_bad_config_raises_options_error_naming_file_and_line(
    harness: Harness, write_config: WriteConfig
) -> None:
    bad = write_config("key: environment\ndestination: nowhere\n")
    with pytest.raises(exceptions.OptionsError, match=rf"{bad}:2:14: destination: expected"):
        harness.tctx.configure(harness.dispatcher, dispatcher_config=str(bad))


def test_bad_config_at_runtime_keeps_the_last_good_rules(
    harness: Harness, write_config: WriteConfig, config_path: Path
) -> None:
    good = harness.dispatcher.rules
    with pytest.raises(exceptions.OptionsError):
        harness.tctx.configure(
            harness.dispatcher, dispatcher_config=str(write_config("key: [x]\n"))
        )
    assert harness.dispatcher.rules == good
    assert harness.tctx.options.dispatcher_config == str(config_path)  # rolled back
    assert harness.dispatch(make_flow(("environment", "dev"))).request.host == "dev.test"


def test_new_config_applies_to_later_requests(harness: Harness, write_config: WriteConfig) -> None:
    other = write_config("key: tenant\ndestination: http://other.test\n")
    harness.tctx.configure(harness.dispatcher, dispatcher_config=str(other))
    assert harness.dispatch(make_flow(("environment", "dev"))).request.host == "other.test"


def test_unknown_log_level_is_an_options_error(
    monkeypatch: pytest.MonkeyPatch, config_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_LOGGING_LEVEL", "LOUD")
    dispatcher = Dispatcher()
    with (
        taddons.context(dispatcher) as tctx,
        pytest.raises(
            exceptions.OptionsError, match="SIDECAR_LOGGING_LEVEL='LOUD' is not one of DEBUG"
        ),
    ):
        tctx.configure(dispatcher, dispatcher_config=str(config_path))


def test_the_parts_are_registered_in_order_under_their_names(harness: Harness) -> None:
    addons = harness.tctx.master.addons
    names = ("dispatcher-startup", "dispatcher-request-limits", "dispatcher-config")
    parts = [addons.get(name) for name in names]
    assert parts == harness.dispatcher.addons[:3]
    assert addons.get("dispatcher-router") is harness.dispatcher.router
    assert harness.dispatcher.addons[2] is harness.dispatcher.config


def test_a_master_that_never_sets_the_option_reads_the_config_when_running(
    monkeypatch: pytest.MonkeyPatch, config_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_CONFIG", str(config_path))
    dispatcher = Dispatcher()
    # As a master built by hand: no configure event names the dispatcher's options.
    with taddons.context(Proxyserver(), dispatcher) as tctx:
        tctx.options.connection_strategy = "eager"
        assert dispatcher.rules is None
        invoke(tctx, dispatcher, hooks.RunningHook())
        assert dispatcher.rules is not None
        assert set(dispatcher.rules.rewrites) == {"dev", "qa", "token"}
        assert tctx.options.connection_strategy == "lazy"  # the start-up policy ran too
        flow = make_flow(("environment", "dev"))
        invoke(tctx, dispatcher, HttpRequestHeadersHook(flow))
        assert flow.request.host == "dev.test"
        invoke(tctx, dispatcher, hooks.DoneHook())


def test_a_master_that_never_sets_the_option_refuses_a_bad_config_when_running(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    bad = write_config("key: environment\ndestination: nowhere\n")
    monkeypatch.setenv("SIDECAR_CONFIG", str(bad))
    dispatcher = Dispatcher()
    with (
        taddons.context(dispatcher) as tctx,
        pytest.raises(exceptions.OptionsError, match=rf"{bad}:2:14: destination: expected"),
    ):
        invoke(tctx, dispatcher, hooks.RunningHook())
    assert dispatcher.rules is None


# --- dispatch


def test_dispatched_request_is_rewritten_and_patched(harness: Harness) -> None:
    request = harness.dispatch(make_flow(("environment", "dev"))).request
    assert (request.scheme, request.host, request.port) == ("http", "dev.test", 8082)
    assert request.path == "/base/x?q=1"
    assert request.headers["Host"] == "example.com"
    assert request.headers["dispatched"] == "true"
    assert request.headers["X-Forwarded-For"] == "127.0.0.1"
    assert request.url == "http://dev.test:8082/base/x?q=1"


def test_default_request_goes_to_default_unpatched(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "prod")))
    request = flow.request
    assert request.url == "http://default.test:8081/x?q=1"
    assert request.headers["Host"] == "default.test:8081"
    assert "dispatched" not in request.headers
    assert not flow.marked


def test_rule_without_destination_patches_and_uses_default(harness: Harness) -> None:
    request = harness.dispatch(make_flow(("environment", "qa"))).request
    assert request.url == "http://default.test:8081/x?q=1"
    assert request.headers["dispatched"] == "true"


def test_https_destination_sets_scheme_and_default_port(harness: Harness) -> None:
    request = harness.dispatch(make_flow(("environment", "token"))).request
    assert request.url == "https://secure.test/x?q=1"
    assert request.headers["Host"] == "secure.test"


def test_patch_replaces_every_existing_value_and_later_patch_wins(harness: Harness) -> None:
    flow = make_flow(
        ("environment", "token"), ("Authorization", "Basic a"), ("authorization", "Basic b")
    )
    request = harness.dispatch(flow).request
    assert request.headers.get_all("Authorization") == ["Bearer s3cret"]
    assert request.headers.get_all("X-Twice") == ["second"]


def test_forwarded_for_is_appended(harness: Harness) -> None:
    request = harness.dispatch(make_flow(("X-Forwarded-For", "203.0.113.9"))).request
    assert request.headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"


def test_keep_host_header_keeps_the_client_host(harness: Harness) -> None:
    harness.tctx.configure(harness.dispatcher, keep_host_header=True)
    default = harness.dispatch(make_flow(host="app.client.test")).request
    assert default.host == "default.test"
    assert default.headers["Host"] == "app.client.test"
    dev = harness.dispatch(make_flow(("environment", "dev"), host="app.client.test")).request
    assert dev.headers["Host"] == "example.com"  # a Host patch still wins


def test_http2_host_patch_sets_authority(harness: Harness) -> None:
    request = harness.dispatch(make_flow(("environment", "dev"), http2=True)).request
    assert request.authority == "example.com"
    assert request.host_header == "example.com"
    assert "Host" not in request.headers
    default = harness.dispatch(make_flow(http2=True)).request
    assert default.authority == "default.test:8081"


def test_flow_records_the_decision_for_mitmweb(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    assert flow.comment == "dev → http://dev.test:8082/base"
    assert flow.marked == DISPATCHED_MARKER
    metadata = flow.metadata["dispatcher"]
    assert metadata["rule"] == "dev"
    assert metadata["destination"] == "http://dev.test:8082/base"
    assert metadata["headers_set"]["dispatched"] == "true"
    default = harness.dispatch(make_flow())
    assert default.comment == "default → http://default.test:8081"
    assert default.metadata["dispatcher"]["reason"] == "no environment header"


def test_conflicting_key_headers_get_400(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev"), ("environment", "qa")))
    assert flow.response is not None
    assert flow.response.status_code == 400
    assert b"conflicting environment headers" in body(flow)
    assert flow.request.host == "reverse.target"


def test_exception_in_dispatch_fails_closed_with_502(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("routing exploded")

    monkeypatch.setattr("sidecar_dispatcher.proxy.router.resolve", broken)
    with caplog.at_level(logging.ERROR):
        flow = harness.dispatch(make_flow(("environment", "dev")))
    assert flow.response is not None
    assert flow.response.status_code == 502
    assert flow.response.headers["Content-Type"].startswith("text/plain")
    assert body(flow) == b"sidecar dispatcher: dispatch failed (RuntimeError; see the log)\n"
    assert "routing exploded" in caplog.text  # the details: in the log, not in the answer
    assert any(
        "Traceback" in record.getMessage()
        for record in caplog.records
        if record.levelno == logging.ERROR
    )


def test_without_config_requests_fail_closed(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = Dispatcher()
    with taddons.context(dispatcher) as tctx:
        flow = make_flow()
        with caplog.at_level(logging.ERROR, logger="sidecar_dispatcher"):
            invoke(tctx, dispatcher, HttpRequestHeadersHook(flow))
        assert flow.response is not None
        assert flow.response.status_code == 502
        assert b"dispatch failed (RuntimeError; see the log)" in body(flow)
        assert "no configuration loaded" in caplog.text


def test_flows_already_answered_or_replayed_are_left_alone(harness: Harness) -> None:
    answered = make_flow(("environment", "dev"))
    answered.response = http.Response.make(204)
    assert harness.dispatch(answered).request.host == "reverse.target"
    replayed = make_flow(("environment", "dev"))
    replayed.is_replay = "request"
    assert harness.dispatch(replayed).request.host == "reverse.target"


# --- logging


def test_one_info_line_per_request_when_it_completes_without_header_values(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        flow = harness.dispatch(make_flow(("environment", "token")))
        assert not [r for r in caplog.records if r.levelno == logging.INFO]  # not yet
        harness.hook(HttpResponseHook(answer(flow)))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [
        "token → https://secure.test (environment: token) GET /x "
        "patched=[Host, X-Forwarded-For, Authorization, X-Twice, x-twice] 200 12.5ms"
    ]
    assert "s3cret" not in caplog.text


def test_debug_shows_header_values(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="sidecar_dispatcher"):
        harness.dispatch(make_flow(("environment", "token")))
    assert "token → set Authorization: Bearer s3cret" in caplog.text


def test_logging_level_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, config_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_LOGGING_LEVEL", "warning")
    dispatcher = Dispatcher()
    with taddons.context(dispatcher) as tctx:
        tctx.configure(dispatcher, dispatcher_config=str(config_path))
        assert logging.getLogger("sidecar_dispatcher").level == logging.WARNING
        monkeypatch.setenv("SIDECAR_LOGGING_LEVEL", "INFO")
        invoke(tctx, dispatcher, hooks.ConfigureHook({"dispatcher_config"}))
        assert logging.getLogger("sidecar_dispatcher").level == logging.INFO


def test_error_hook_names_rule_and_destination(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    flow.error = tflow.terr("connection refused")
    with caplog.at_level(logging.WARNING, logger="sidecar_dispatcher"):
        harness.hook(HttpErrorHook(flow))
    assert "dev → http://dev.test:8082/base failed: connection refused" in caplog.text


# --- start-up


def test_loading_a_config_switches_to_lazy_connections(
    harness: Harness, write_config: WriteConfig
) -> None:
    harness.tctx.configure(harness.dispatcher, connection_strategy="eager")
    harness.tctx.configure(harness.dispatcher, dispatcher_config=str(write_config(CONFIG)))
    assert harness.tctx.options.connection_strategy == "lazy"


def test_running_explains_a_reverse_target_that_is_not_the_default(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.tctx.configure(harness.dispatcher, mode=["reverse:http://elsewhere.test:9000"])
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        harness.hook(hooks.RunningHook())
    assert (
        "reverse-mode target http://elsewhere.test:9000 is not the config's default" in caplog.text
    )
    caplog.clear()
    harness.tctx.configure(harness.dispatcher, mode=["reverse:http://default.test:8081"])
    with caplog.at_level(logging.INFO, logger="sidecar_dispatcher"):
        harness.hook(hooks.RunningHook())
    assert "reverse-mode target" not in caplog.text


def test_debug_level_raises_terminal_verbosity(
    monkeypatch: pytest.MonkeyPatch, config_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_LOGGING_LEVEL", "DEBUG")
    dispatcher = Dispatcher()
    with taddons.context(TermLog(out=io.StringIO()), dispatcher) as tctx:
        tctx.configure(dispatcher, dispatcher_config=str(config_path))
        assert tctx.options.termlog_verbosity == "debug"


# --- live reload


OTHER_CONFIG = "key: environment\ndestination: http://other.test\n"


def test_file_change_reload_applies_a_changed_file(harness: Harness, config_path: Path) -> None:
    config_path.write_text(OTHER_CONFIG)
    harness.dispatcher.config.reload("test", only_if_changed=True)
    assert harness.dispatch(make_flow(("environment", "dev"))).request.host == "other.test"


def test_file_change_reload_keeps_the_last_good_config_when_the_file_is_invalid(
    harness: Harness, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path.write_text("key: environment\ndestination: nowhere\n")
    with caplog.at_level(logging.ERROR, logger="sidecar_dispatcher"):
        harness.dispatcher.config.reload("test", only_if_changed=True)
    assert harness.dispatch(make_flow(("environment", "dev"))).request.host == "dev.test"
    assert f"{config_path}:2:14: destination: expected" in caplog.text
    assert "still serving the last good config" in caplog.text


def test_file_change_reload_keeps_the_last_good_config_when_the_file_is_deleted(
    harness: Harness, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path.unlink()
    with caplog.at_level(logging.ERROR, logger="sidecar_dispatcher"):
        harness.dispatcher.config.reload("test", only_if_changed=True)
        harness.dispatcher.config.reload("test", only_if_changed=True)
    assert harness.dispatch(make_flow(("environment", "dev"))).request.host == "dev.test"
    assert caplog.text.count("is missing; still serving the last good config") == 1


def test_reload_command_rereads_the_file(harness: Harness, config_path: Path) -> None:
    config_path.write_text(OTHER_CONFIG)
    harness.tctx.command(harness.dispatcher.config.reload_command)
    assert harness.dispatch(make_flow()).request.host == "other.test"


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_watcher_applies_a_saved_file_and_follows_the_option(config_path: Path) -> None:
    async def scenario() -> None:
        dispatcher = Dispatcher()
        with taddons.context(dispatcher) as tctx:
            tctx.configure(dispatcher, dispatcher_config=str(config_path))
            assert dispatcher.config.watcher is not None
            assert dispatcher.config.watcher.method == "inotify"
            config_path.write_text(OTHER_CONFIG)
            for _ in range(40):  # the watcher settles for 0.25 s
                await asyncio.sleep(0.05)
                if dispatcher.rules and dispatcher.rules.default == Destination(
                    "http", "other.test", 80
                ):
                    break
            assert dispatcher.rules is not None
            assert dispatcher.rules.default == Destination("http", "other.test", 80)
            tctx.configure(dispatcher, dispatcher_watch=False)
            assert dispatcher.config.watcher is None
            invoke(tctx, dispatcher, hooks.DoneHook())

    asyncio.run(scenario())


def test_mitmweb_default_columns_gain_the_comment_column(config_path: Path) -> None:
    dispatcher = Dispatcher()
    with taddons.context(dispatcher) as tctx:
        tctx.options.add_option("web_columns", Sequence[str], MITMWEB_DEFAULT_COLUMNS, "")
        tctx.configure(dispatcher, dispatcher_config=str(config_path))
        assert list(tctx.options.web_columns) == [
            "tls",
            "icon",
            "path",
            "method",
            "status",
            "comment",
            "size",
            "time",
        ]
        tctx.configure(dispatcher, web_columns=["path", "status"])
        tctx.configure(dispatcher, dispatcher_config=str(config_path))
        assert list(tctx.options.web_columns) == ["path", "status"]  # a user's choice stays


def test_upstream_ca_that_cannot_be_loaded_is_an_options_error(
    harness: Harness, tmp_path: Path
) -> None:
    with pytest.raises(exceptions.OptionsError, match="cannot load the CA for upstream TLS"):
        harness.tctx.configure(
            harness.dispatcher, ssl_verify_upstream_trusted_ca=str(tmp_path / "absent.pem")
        )
    with pytest.raises(exceptions.OptionsError, match="ssl_verify_upstream_trusted_confdir="):
        harness.tctx.configure(
            harness.dispatcher, ssl_verify_upstream_trusted_confdir=str(tmp_path / "absent")
        )
