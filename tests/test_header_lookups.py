"""The runner's `Headers.get` / `in` answer what mitmproxy's (Mapping's) do, for any fields
and any name."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.net.http.http1 import read

from sidecar_dispatcher._mitmproxy.speed import header_lookups

NAMES = (b"Host", b"host", b"Content-Length", b"content-length", b"Transfer-Encoding",
         b"X-\xc3\xa9", b"X-\xff", b"Connection", b"CONNECTION", b"a", b"A", b"")  # fmt: skip
VALUES = (b"", b"1", b"chunked", b"close, keep-alive", b"\xc3\xa9t\xc3\xa9", b"\xff\xfe", b"a, b")
KEYS = ("host", "HOST", "content-length", "transfer-encoding", "x-é", "X-\udcff", "connection",
        "a", "", "absent", "Host ", "hoSt")  # fmt: skip


def generated_headers(rng: random.Random) -> http.Headers:
    return http.Headers(
        [(rng.choice(NAMES), rng.choice(VALUES)) for _ in range(rng.randrange(0, 8))]
    )


def test_get_and_in_answer_as_mitmproxys_own_for_generated_headers_and_names() -> None:
    rng = random.Random(13)
    compared = 0
    for _ in range(2_000):
        headers = generated_headers(rng)
        for key in (*KEYS, *(k.encode("utf-8", "surrogateescape") for k in KEYS)):
            default = rng.choice((None, "fallback", 0))
            assert header_lookups.get(headers, key, default) == Mapping.get(headers, key, default)
            assert header_lookups.contains(headers, key) == Mapping.__contains__(headers, key)
            compared += 1
    assert compared == 2_000 * len(KEYS) * 2


def outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as e:  # the kind of failure, to compare
        return type(e)


@pytest.mark.parametrize("key", [None, 1, ("host",), 2.5])
def test_a_name_of_another_type_fares_as_in_mitmproxy(key: Any) -> None:
    headers = http.Headers(host="example.com")
    stock_get = outcome(lambda: Mapping.get(headers, key, "d"))
    stock_in = outcome(lambda: Mapping.__contains__(headers, key))
    assert isinstance(stock_get, type) and issubclass(stock_get, Exception)  # none is a name
    assert outcome(lambda: header_lookups.get(headers, key, "d")) == stock_get
    assert outcome(lambda: header_lookups.contains(headers, key)) == stock_in


def test_once_installed_mitmproxys_http1_reader_uses_them_and_reads_the_same() -> None:
    requests = [
        http.Request.make("POST", "http://example.com/", b"x", http.Headers(content_length="1")),
        http.Request.make("GET", "http://example.com/", b"", http.Headers(connection="close")),
        http.Request.make(
            "POST", "http://example.com/", b"", http.Headers(transfer_encoding="chunked")
        ),
    ]
    stock = [(read.expected_http_body_size(r), read.connection_close("HTTP/1.1", r.headers))
             for r in requests]  # fmt: skip
    header_lookups.faster_header_lookups()
    assert header_lookups.installed()
    assert http.Headers.get is header_lookups.get
    assert [(read.expected_http_body_size(r), read.connection_close("HTTP/1.1", r.headers))
            for r in requests] == stock == [(1, False), (0, True), (None, False)]  # fmt: skip


def test_the_reach_holds_before_and_after_installing() -> None:
    assert header_lookups._check_stock_path() is None
    header_lookups.faster_header_lookups()
    assert header_lookups._check_stock_path() is None


def test_a_headers_class_with_its_own_get_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http.Headers, "get", lambda self, key, default=None: default, raising=False)
    assert header_lookups._check_stock_path() == (
        "Headers has its own get() now; the runner would replace it"
    )


def test_a_changed_get_all_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    def get_all(self: http.Headers, name: str | bytes) -> list[str]:
        return [value.decode() for key, value in self.fields if key == name]

    monkeypatch.setattr(http.Headers, "get_all", get_all)
    problem = header_lookups._check_stock_path()
    assert problem is not None and "get_all no longer has" in problem


def test_changed_folding_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http.Headers, "_reduce_values", staticmethod(lambda values: values[0]))
    assert header_lookups._check_stock_path() == "Headers folding changed"
