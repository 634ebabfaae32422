"""The router's one-pass header reads and edits give what mitmproxy's own operations give."""

from __future__ import annotations

import random

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from sidecar_dispatcher.config.load import parse_config
from sidecar_dispatcher.core.decision import Decision
from sidecar_dispatcher.core.header_edits import HeaderIndex, edited_fields
from sidecar_dispatcher.core.model import HeaderAppend, HeaderEdit, HeaderPatch, HeaderRemoval
from sidecar_dispatcher.core.resolve import resolve
from sidecar_dispatcher.proxy.router import apply_decision

# Names that differ only in case, one non-ASCII (mitmproxy lowercases ASCII only), one empty value.
NAMES = ["X-A", "x-a", "X-B", "dispatched", "Dispatched", "Ünï", "ünï", "Cookie"]
VALUES = ["1", "two", "", "ü", "a, b"]


def generated(seed: int) -> tuple[list[tuple[str, str]], list[HeaderEdit]]:
    chooser = random.Random(seed)
    fields = [(chooser.choice(NAMES), chooser.choice(VALUES)) for _ in range(chooser.randrange(8))]
    edits: list[HeaderEdit] = []
    for _ in range(chooser.randrange(6)):
        kind = chooser.randrange(3)
        name, value = chooser.choice(NAMES), chooser.choice(VALUES)
        if kind == 0:
            edits.append(HeaderPatch(name, value))
        elif kind == 1:
            edits.append(HeaderAppend(name, value))
        else:
            edits.append(HeaderRemoval(name))
    return fields, edits


def as_mitmproxy_headers(fields: list[tuple[str, str]]) -> http.Headers:
    headers = http.Headers()
    for name, value in fields:
        headers.add(name, value)
    return headers


@pytest.mark.parametrize("seed", range(300))
def test_edits_in_one_pass_equal_mitmproxys_edits_one_by_one(seed: int) -> None:
    fields, edits = generated(seed)
    expected = as_mitmproxy_headers(fields)
    for edit in edits:
        if isinstance(edit, HeaderPatch):
            expected[edit.name] = edit.value
        elif isinstance(edit, HeaderAppend):
            expected.add(edit.name, edit.value)
        else:
            expected.pop(edit.name, None)
    assert edited_fields(as_mitmproxy_headers(fields).fields, edits) == expected.fields


@pytest.mark.parametrize("seed", range(100))
def test_the_index_reads_as_mitmproxys_headers_do(seed: int) -> None:
    fields, _ = generated(seed)
    headers = as_mitmproxy_headers(fields)
    index = HeaderIndex(headers.fields)
    assert index.items() == list(headers.items(multi=True))
    for name in {*NAMES, "absent"}:
        assert index.get_all(name) == headers.get_all(name), name


RULES = parse_config(
    """
key: environment
destination: http://default.test:8081
rewrites:
  dev:
    destination: https://dev.test:8443/base
    patch:
      - {key: Host, val: example.com}
      - {key: dispatched, val: "true"}
      - {key: x-forwarded-for, val: "10.9.9.9"}
  qa:
    destination: http://qa.test
    patch:
      - {key: DISPATCHED, val: "yes"}
"""
)


def reference_apply(request: http.Request, decision: Decision, *, keep_host: bool) -> None:
    """The router's apply_decision as written with mitmproxy's public setters, one by one."""
    client_host_header = request.host_header
    assert decision.destination is not None
    request.scheme = decision.destination.scheme
    request.host = decision.destination.host
    request.port = decision.destination.port
    request.path = decision.path
    if keep_host:
        request.host_header = client_host_header
    for edit in decision.headers:
        if isinstance(edit, HeaderPatch) and edit.name.lower() == "host":
            request.host_header = edit.value
        elif isinstance(edit, HeaderPatch):
            request.headers[edit.name] = edit.value
        elif isinstance(edit, HeaderAppend):
            request.headers.add(edit.name, edit.value)
        else:
            request.headers.pop(edit.name, None)
    if not (request.is_http2 or request.is_http3):
        request.authority = ""


def client_request(key: str | None, *, http2: bool, absolute: bool) -> http.Request:
    request = tflow.tflow().request
    request.host, request.port = "reverse.target", 8081
    request.headers.clear()
    if http2:
        request.http_version = "HTTP/2.0"
        request.authority = "sidecar.test:5000"
    else:
        request.headers["Host"] = "sidecar.test:5000"
        if absolute:
            request.authority = "app.internal"
    request.headers.add("dispatched", "client")
    request.headers.add("X-Forwarded-For", "192.0.2.1")
    if key is not None:
        request.headers.add("environment", key)
    request.path = "/x?q=1"
    return request


@pytest.mark.parametrize("key", ["dev", "qa", None])
@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("keep_host", [False, True], ids=["host-set", "host-kept"])
@pytest.mark.parametrize("absolute", [False, True], ids=["origin-form", "absolute-form"])
def test_a_decision_is_applied_as_mitmproxys_setters_would_apply_it(
    key: str | None, http2: bool, keep_host: bool, absolute: bool
) -> None:
    fast, reference = (client_request(key, http2=http2, absolute=absolute) for _ in range(2))
    decision = resolve(
        RULES,
        HeaderIndex(fast.headers.fields),
        client_ip="127.0.0.1",
        path=fast.path,
        keep_host=keep_host,
    )
    apply_decision(fast, decision, keep_host=keep_host)
    reference_apply(reference, decision, keep_host=keep_host)
    assert fast.data == reference.data
