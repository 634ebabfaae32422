"""Destinations that misbehave, behind a real sidecar: what the client gets, what the log says,
and that the sidecar still serves. Against mitmdump and the runner.

Part of the reliability suite (the `reliability` marker: `make test-reliability`). Each upstream
here is a raw socket server playing a script per connection, so that the bytes are exactly
those of the case (a 103 before the answer, a connection closed just as a request arrives).
"""

from __future__ import annotations

import http.client
import socket

import pytest

from sidecar_dispatcher.testing.configs import Rewrite, config_text

from .conftest import SaveConfig
from .processes import Sidecar, Upstream
from .scripted import ScriptedUpstream, read_head

pytestmark = pytest.mark.reliability

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def sidecar_before(
    save_config: SaveConfig, upstream: ScriptedUpstream, default: Upstream, engine: str
) -> Sidecar:
    config = save_config(config_text(default.url, {"odd": Rewrite(destination=upstream.url)}))
    return Sidecar(default.url, config=config, engine=engine)


ODD = [("environment", "odd")]


def test_a_103_before_the_answer_is_dropped_and_the_answer_forwarded(
    save_config: SaveConfig, default_upstream: Upstream, engine: str
) -> None:
    def early_hints(connection: socket.socket, _: int) -> None:
        while read_head(connection):
            connection.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

    with (
        ScriptedUpstream(early_hints) as odd,
        sidecar_before(save_config, odd, default_upstream, engine) as sidecar,
    ):
        for _ in range(2):  # and the connection serves the next request
            response = sidecar.request("GET", "/", ODD)
            assert (response.status, response.body) == (200, b"ok")
        assert "Unexpected data from server" not in sidecar.logs()


def test_hop_by_hop_and_folded_response_headers_do_not_pass(
    save_config: SaveConfig, default_upstream: Upstream, engine: str
) -> None:
    def untidy(connection: socket.socket, _: int) -> None:
        while read_head(connection):
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nConnection: X-Backend\r\nX-Backend: 10.1.2.3\r\n"
                b"Keep-Alive: timeout=5\r\nX-Folded: one\r\n  two\r\nContent-Length: 2\r\n\r\nok"
            )

    with (
        ScriptedUpstream(untidy) as odd,
        sidecar_before(save_config, odd, default_upstream, engine) as sidecar,
    ):
        response = sidecar.request("GET", "/", ODD)
        assert (response.status, response.body) == (200, b"ok")
        names = {name.lower() for name, _ in response.headers}
        assert not names & {"connection", "x-backend", "keep-alive"}, response.headers
        assert response.header("X-Folded") == "one two"


def test_a_stale_keep_alive_connection_gets_an_idempotent_request_again(
    save_config: SaveConfig, default_upstream: Upstream, engine: str
) -> None:
    """The destination closes each connection when its second request arrives, unanswered:
    as one whose keep-alive timeout fired just then."""
    upstream: ScriptedUpstream

    def one_answer_per_connection(connection: socket.socket, _: int) -> None:
        upstream.heads.append(read_head(connection))
        connection.sendall(OK)
        upstream.heads.append(read_head(connection))  # read, then closed without an answer

    with (
        ScriptedUpstream(one_answer_per_connection) as upstream,
        sidecar_before(save_config, upstream, default_upstream, engine) as sidecar,
    ):
        client = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
        try:
            for method in ("GET", "GET", "PUT", "POST"):
                client.request(method, "/again", headers=dict(ODD))
                response = client.getresponse()
                body = response.read()
                if method == "POST":  # not idempotent: never sent twice
                    assert response.status == 502, body
                    assert body.startswith(b"sidecar dispatcher: 502 Bad Gateway: ")
                    assert b"127.0.0.1" not in body
                else:
                    assert (response.status, body) == (200, b"ok"), method
                if response.will_close:
                    client.close()
        finally:
            client.close()
        sidecar.wait_for_log("sent again on a new one", count=2)
        posts = [head for head in upstream.heads if head.startswith(b"POST ")]
        assert len(posts) == 1


def test_a_destination_that_refuses_gets_a_plain_text_502_without_its_address(
    save_config: SaveConfig, default_upstream: Upstream, closed_port: int, engine: str
) -> None:
    down = Rewrite(destination=f"http://127.0.0.1:{closed_port}")
    config = save_config(config_text(default_upstream.url, {"odd": down}))
    with Sidecar(default_upstream.url, config=config, engine=engine) as sidecar:
        response = sidecar.request("GET", "/", ODD)
        assert response.status == 502
        assert response.header("Content-Type") == "text/plain; charset=utf-8"
        assert str(closed_port).encode() not in response.body
        assert response.body == (
            b"sidecar dispatcher: 502 Bad Gateway: the destination failed (connect_refused); "
            b"see the sidecar's log\n"
        )
        assert str(closed_port) in sidecar.wait_for_log("failed: ")  # the details: in the log
