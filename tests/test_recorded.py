"""Recorded traffic read back as clients sent it: flow files, HAR files, the runner's recording."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons import save
from mitmproxy.io import FlowReader, FlowWriter, tnetstring
from mitmproxy.test import tflow

from sidecar_dispatcher.core.decision import METADATA_KEY
from sidecar_dispatcher.core.recording import CLIENT_REQUEST_KEY, RecordedRequest, RecordingError
from sidecar_dispatcher.runner.serve import build_master, recording_addons
from sidecar_dispatcher.tools.recorded import read_requests

from .flows import Harness, answer, make_flow

SENT_BY_THE_CLIENT = (("environment", "dev"), ("X-Forwarded-For", "203.0.113.9"))


def write_flows(path: Path, *flows: http.HTTPFlow | object) -> Path:
    with path.open("wb") as file:
        writer = FlowWriter(file)
        for flow in flows:
            writer.add(flow)  # type: ignore[arg-type]
    return path


def only(path: Path) -> RecordedRequest:
    (request,) = read_requests(str(path))
    return request


def test_the_router_keeps_what_its_edits_overwrite(harness: Harness) -> None:
    flow = harness.dispatch(make_flow(*SENT_BY_THE_CLIENT, path="/x?q=1"))
    assert flow.request.path == "/base/x?q=1"  # as sent upstream
    assert flow.metadata[METADATA_KEY][CLIENT_REQUEST_KEY] == {
        "path": "/x?q=1",
        "headers": {
            "Host": ["reverse.target:8081"],
            "X-Forwarded-For": ["203.0.113.9"],
            "dispatched": [],  # absent: the patch added it
        },
        "keep_host": False,
    }


def test_a_flow_file_yields_the_request_as_the_client_sent_it(
    harness: Harness, tmp_path: Path
) -> None:
    client = make_flow(*SENT_BY_THE_CLIENT, path="/x?q=1")
    sent_fields = list(client.request.headers.items(multi=True))
    flow = answer(harness.dispatch(client))
    request = only(write_flows(tmp_path / "dev.flows", flow))
    assert request.path == "/x?q=1"
    assert sorted(request.headers) == sorted(sent_fields)
    assert request.method == "GET"
    assert request.client_ip == flow.client_conn.peername[0]
    assert request.keep_host is False
    assert request.decision is not None
    assert request.decision["rule"] == "dev"
    assert request.identity == flow.id
    assert request.where == f"{tmp_path / 'dev.flows'}: flow 1 (GET /x)"


def test_the_clients_host_is_kept_with_keep_host_header(harness: Harness, tmp_path: Path) -> None:
    harness.tctx.configure(harness.dispatcher, keep_host_header=True)
    flow = harness.dispatch(make_flow(("environment", "qa"), host="app.client.test"))
    request = only(write_flows(tmp_path / "qa.flows", flow))
    assert request.keep_host is True
    assert ("Host", "app.client.test") in request.headers


def test_the_reader_reads_what_mitmproxys_flow_reader_reads(tmp_path: Path) -> None:
    plain = tflow.tflow(resp=True)  # not dispatched: no metadata, read as recorded
    plain.request.headers.add("X-Twice", "1")
    plain.request.headers.add("x-twice", "2")
    plain.request.content = b"\x00" * 100_000  # skipped, not read
    path = write_flows(tmp_path / "mixed.flows", tflow.ttcpflow(), plain, tflow.twebsocketflow())
    with path.open("rb") as file:
        expected = [f for f in FlowReader(file).stream() if isinstance(f, http.HTTPFlow)]
    read = list(read_requests(str(path)))
    assert [(r.method, r.path, r.headers, r.client_ip, r.decision) for r in read] == [
        (
            f.request.method,
            f.request.path,
            tuple(f.request.headers.items(multi=True)),
            f.client_conn.peername[0],
            None,
        )
        for f in expected
    ]
    assert read[0].where == f"{path}: flow 2 (GET /path)"  # the TCP flow is flow 1


def older_version(flow: http.HTTPFlow, version: int) -> bytes:
    state = flow.get_state()
    state["version"] = version
    return tnetstring.dumps(state)


def test_a_flow_of_an_older_format_is_migrated_by_mitmproxy(
    harness: Harness, tmp_path: Path
) -> None:
    flow = harness.dispatch(make_flow(*SENT_BY_THE_CLIENT, path="/old"))
    path = tmp_path / "v20.flows"
    path.write_bytes(older_version(flow, 20))  # mitmproxy 10's format: 20 → 21 on reading
    request = only(path)
    assert request.path == "/old"
    assert request.decision is not None and request.decision["rule"] == "dev"


def test_a_flow_of_a_newer_format_is_refused_naming_the_flow(tmp_path: Path) -> None:
    path = tmp_path / "future.flows"
    path.write_bytes(older_version(tflow.tflow(), 99))
    with pytest.raises(RecordingError, match=r"future.flows: flow 1: .*format version 99"):
        list(read_requests(str(path)))


def test_a_truncated_flow_file_names_the_file_and_the_flow(tmp_path: Path) -> None:
    whole = write_flows(tmp_path / "whole.flows", tflow.tflow(), tflow.tflow()).read_bytes()
    cut = tmp_path / "cut.flows"
    cut.write_bytes(whole[: len(whole) - 100])
    read = read_requests(str(cut))
    assert next(read).method == "GET"
    with pytest.raises(RecordingError, match=r"cut.flows: flow 2: truncated \(the file ends 100 "):
        next(read)


@pytest.mark.parametrize("content", [b"hello: world\n", b"\x89PNG\r\n\x1a\n", b"12345:x"])
def test_a_file_that_is_not_a_flow_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.bin"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=r"other.bin: flow 1: (not a mitmproxy|truncated)"):
        list(read_requests(str(path)))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"absent.flows: cannot read: No such file"):
        list(read_requests(str(tmp_path / "absent.flows")))


def test_a_decision_recorded_without_the_client_request_is_refused(
    harness: Harness, tmp_path: Path
) -> None:
    flow = harness.dispatch(make_flow(("environment", "dev")))
    del flow.metadata[METADATA_KEY][CLIENT_REQUEST_KEY]  # as a sidecar older than `diff`
    with pytest.raises(RecordingError, match=r"flow 1: the decision was recorded without"):
        only(write_flows(tmp_path / "old-sidecar.flows", flow))


# --- HAR files


def har(*entries: dict[str, object]) -> str:
    return json.dumps({"log": {"version": "1.2", "entries": list(entries)}})


def entry(method: str, url: str, *headers: tuple[str, str]) -> dict[str, object]:
    fields = [{"name": name, "value": value} for name, value in headers]
    return {"request": {"method": method, "url": url, "headers": fields}, "response": {}}


def test_a_har_file_yields_the_clients_requests_without_pseudo_headers(tmp_path: Path) -> None:
    path = tmp_path / "browser.har"
    path.write_text(
        har(
            entry("GET", "http://sidecar.test:5000/", ("Host", "sidecar.test:5000")),
            entry(
                "POST",
                "https://sidecar.test/api/items?id=7",
                (":authority", "sidecar.test"),
                ("environment", "dev"),
            ),
        ),
        encoding="utf-8-sig",  # as some tools write it
    )
    first, second = read_requests(str(path))
    assert (first.method, first.path, first.headers) == (
        "GET",
        "/",
        (("Host", "sidecar.test:5000"),),
    )
    assert (second.path, second.headers) == ("/api/items?id=7", (("environment", "dev"),))
    assert second.decision is None and second.client_ip is None
    assert second.where == f"{path}: entry 2 (POST /api/items)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{}", r"not a HAR file \(KeyError: 'log'\)"),
        ('{"log": ', r"not a HAR file \(JSONDecodeError"),
        (har({"request": {"method": "GET"}}), r"entry 1: not a HAR entry \(missing 'url'\)"),
    ],
)
def test_a_file_that_is_not_a_har_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.har"
    path.write_text(text)
    with pytest.raises(RecordingError, match=message):
        list(read_requests(str(path)))


# --- the runner's recording


def test_the_runner_loads_mitmproxys_save_addon_only_to_record() -> None:
    assert recording_addons(["listen_host=127.0.0.1", "stream_large_bodies=1m"]) == []
    (addon,) = recording_addons(["save_stream_file=+/tmp/sample.flows"])
    assert isinstance(addon, save.Save)


def build(options: list[str], *, reuse_port: bool = False) -> bool:
    """Whether the built runner keeps the client's request with each flow."""

    async def build_only() -> bool:
        built = build_master(options, reuse_port=reuse_port)
        keeps: bool = built.addons.get("dispatcher").router.keeps_client_request
        built._legacy_log_events.uninstall()
        built.addons.clear()
        return keeps

    return asyncio.run(build_only())


def test_the_runner_keeps_the_client_request_only_when_it_records(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("key: environment\ndestination: http://127.0.0.1:1\n")
    common = ["mode=reverse:http://127.0.0.1:1@1", f"dispatcher_config={config}",
              "dispatcher_admin=", "dispatcher_watch=false"]  # fmt: skip
    assert build([*common, f"save_stream_file={tmp_path / 'traffic.flows'}"]) is True
    assert build(common) is False


def test_a_router_told_not_to_keep_the_client_request_leaves_it_out(harness: Harness) -> None:
    harness.dispatcher.router.keeps_client_request = False
    flow = harness.dispatch(make_flow(*SENT_BY_THE_CLIENT, path="/x?q=1"))
    assert flow.request.path == "/base/x?q=1"
    assert CLIENT_REQUEST_KEY not in flow.metadata[METADATA_KEY]
    assert flow.metadata[METADATA_KEY]["rule"] == "dev"  # the decision itself is kept


def test_the_runner_still_refuses_a_stream_filter_without_a_stream_file() -> None:
    with pytest.raises(exceptions.OptionsError, match=r"unknown option\(s\).*save_stream_filter"):
        build(["save_stream_filter=~q"])


def test_the_runner_refuses_to_record_with_workers() -> None:
    with pytest.raises(exceptions.OptionsError, match="save_stream_file cannot be used with"):
        build(["save_stream_file=/tmp/never.flows"], reuse_port=True)
