"""Every hostile input and broken destination of the reliability suite, sent to a real nginx
and to the sidecar set up alike; what each did must be what docs/reliability.md says.

The table in docs/reliability.md is not written from memory: each row's nginx and sidecar cells
are the observations below (status the client got, and a detail where the status alone does not
tell), and this test fails when either changes. nginx is Debian's (nginx-light), with its
defaults but for `proxy_read_timeout`, shortened here as `dispatcher_upstream_timeout` is.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass

import pytest

from .nginx_server import Nginx, nginx_binary
from .processes import REPOSITORY, Sidecar, Upstream
from .scripted import ScriptedUpstream, read_head

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

TABLE = REPOSITORY / "docs" / "reliability.md"
TIMEOUT = 2  # seconds, for a destination that never answers: nginx's and the sidecar's
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- the destination: echoes what it got as JSON, or misbehaves as the path asks


def read_body(connection: socket.socket, head: bytes) -> bytes:
    """The rest of a request after its head (Content-Length or chunked, trailers included)."""
    head_part, _, rest = head.partition(b"\r\n\r\n")
    fields = head_part.lower()
    if b"transfer-encoding: chunked" in fields:
        # up to the last chunk (size 0), its trailer fields and the blank line
        while re.search(rb"(^|\r\n)0\r\n(.*\r\n)*\r\n$", rest, re.S) is None:
            if not (chunk := connection.recv(65536)):
                break
            rest += chunk
        return rest
    if match := re.search(rb"content-length: *(\d+)", fields):
        while len(rest) < int(match.group(1)):
            if not (chunk := connection.recv(65536)):
                break
            rest += chunk
    return rest


def echo(head: bytes) -> bytes:
    request_line, *lines = head.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields = [line.split(":", 1) for line in lines if ":" in line]
    payload = json.dumps(
        {
            "upstream": "dev",
            "target": request_line.split(" ")[1],
            "headers": [[name.strip(), value.strip()] for name, value in fields],
        }
    ).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(payload),
        payload,
    )


def destination(connection: socket.socket, _: int) -> None:
    stale = False  # this connection closes, unanswered, when its next request comes
    while head := read_head(connection):
        read_body(connection, head)
        if stale:
            return
        path = head.split(b" ", 2)[1]
        if path == b"/early-hints":
            connection.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            connection.sendall(OK)
        elif path == b"/silent":
            time.sleep(TIMEOUT + 3)
            return
        elif path == b"/stale":
            connection.sendall(OK)
            stale = True
        elif path == b"/trailers":
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                b"2\r\nok\r\n0\r\nX-Sum: 42\r\n\r\n"
            )
        elif path == b"/hop-by-hop":
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nConnection: X-Backend\r\nX-Backend: 10.1.2.3\r\n"
                b"Content-Length: 2\r\n\r\nok"
            )
        elif path == b"/folded":
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n  two\r\nContent-Length: 2\r\n\r\nok"
            )
        elif path == b"/nul":
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nok")
        else:
            connection.sendall(echo(head))


# --- the two proxies, set up alike: `environment: dev` to the scripted destination,
# `environment: down` to a closed port, anything else to the default (an echo server)


def nginx_site(default: str, dev: str, down: str) -> str:
    return f"""
map $http_environment $destination {{
    default default_up;
    dev     dev_up;
    down    down_up;
}}
upstream default_up {{ server {default}; keepalive 8; }}
upstream dev_up {{ server {dev}; keepalive 8; }}
upstream down_up {{ server {down}; }}
server {{
    listen 80;
    location / {{
        proxy_pass http://$destination;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header dispatched true;
        proxy_read_timeout {TIMEOUT}s;
    }}
}}
"""


def sidecar_config(default: str, dev: str, down: str) -> str:
    return (
        f"key: environment\ndestination: http://{default}\nrewrites:\n"
        f"  dev:\n    destination: http://{dev}\n    patch:\n"
        "      - key: dispatched\n        val: true\n"
        f"  down:\n    destination: http://{down}\n"
    )


@dataclass(frozen=True)
class Proxies:
    nginx: int
    sidecar: int


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory, closed_port: int) -> Iterator[Proxies]:
    binary = nginx_binary()
    with Upstream("default") as default, ScriptedUpstream(destination) as dev:
        addresses = (
            f"127.0.0.1:{default.port}",
            dev.url.removeprefix("http://"),
            f"127.0.0.1:{closed_port}",
        )
        workdir = tmp_path_factory.mktemp("nginx")
        config = tmp_path_factory.mktemp("sidecar") / "config.yaml"
        config.write_text(sidecar_config(*addresses))
        with (
            Nginx("dispatcher", nginx_site(*addresses), workdir, binary) as nginx,
            Sidecar(
                default.url,
                config=config,
                engine="runner",
                options=[f"dispatcher_upstream_timeout={TIMEOUT}"],
            ) as sidecar,
        ):
            yield Proxies(nginx.port, sidecar.port)


# --- the cases: what a client sends, and what it saw


def status_of(port: int, raw: bytes) -> tuple[int, http.client.HTTPResponse, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT + 8) as connection:
        connection.sendall(raw)
        response = http.client.HTTPResponse(connection)
        response.begin()
        body = response.read() if response.status >= 200 else b""
        return response.status, response, body


def status(port: int, raw: bytes) -> str:
    return str(status_of(port, raw)[0])


def request(path: str, *fields: str, body: bytes = b"") -> bytes:
    head = "".join(f"{field}\r\n" for field in ("Host: app", "environment: dev", *fields))
    return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


def header_line_that_never_ends(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\nHost: app\r\nX-Huge: ")
        connection.settimeout(0.5)
        with suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            for _ in range(160):  # 10 MB, unless the proxy answers or stops reading first
                if select.select([connection], [], [], 0)[0]:
                    break
                connection.sendall(b"a" * 65536)
        connection.settimeout(5)
        answer = b""
        with suppress(ConnectionResetError, TimeoutError):
            while chunk := connection.recv(65536):
                answer += chunk
    return answer.split(b" ", 2)[1].decode() if answer else "no answer"


def reached(port: int, raw: bytes) -> dict[str, object]:
    code, _, body = status_of(port, raw)
    assert code == 200, body[:200]
    echoed: dict[str, object] = json.loads(body)
    return echoed


def key_with_nbsp(port: int) -> str:
    raw = b"GET / HTTP/1.1\r\nHost: app\r\nenvironment: \xc2\xa0dev\r\n\r\n"
    return f"200, {reached(port, raw)['upstream']}"


def absolute_form(port: int) -> str:
    raw = b"GET http://app.internal/page HTTP/1.1\r\nHost: app.internal\r\nenvironment: dev\r\n\r\n"
    target = str(reached(port, raw)["target"])
    return "200, origin form" if target.startswith("/") else "200, absolute form"


def named_hop_by_hop(port: int) -> str:
    echoed = reached(port, request("/", "Connection: X-Secret", "X-Secret: 1"))
    names = {str(name).lower() for name, _ in echoed["headers"]}  # type: ignore[attr-defined]
    return "200, X-Secret dropped" if "x-secret" not in names else "200, X-Secret passed"


def destination_refuses(port: int) -> str:
    code, response, _ = status_of(port, b"GET / HTTP/1.1\r\nHost: app\r\nenvironment: down\r\n\r\n")
    kind = (
        "plain text" if response.getheader("Content-Type", "").startswith("text/plain") else "HTML"
    )
    return f"{code}, {kind}"


def stale_connection(method: str) -> Callable[[int], str]:
    def send(port: int) -> str:
        first = request("/stale").replace(b"GET", method.encode(), 1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            codes = []
            for _ in range(2):  # the second meets the connection the destination closes
                connection.sendall(
                    first.replace(b"dev\r\n\r\n", b"dev\r\nContent-Length: 0\r\n\r\n")
                )
                response = http.client.HTTPResponse(connection)
                response.begin()
                response.read()
                codes.append(response.status)
        return str(codes[-1])

    return send


def response_header(path: str, name: str) -> Callable[[int], str]:
    def send(port: int) -> str:
        code, response, _ = status_of(port, request(path))
        value = response.getheader(name)
        return f"{code}, {name} {'dropped' if value is None else repr(value)}"

    return send


CASES: dict[str, Callable[[int], str]] = {
    "header-line": header_line_that_never_ends,
    "long-url": lambda port: status(port, request("/" + "a" * 9000)),
    "big-head": lambda port: status(
        port, request("/", *(f"X-{n}: {'v' * 1000}" for n in range(40)))
    ),
    "key-nbsp": key_with_nbsp,
    "absolute-form": absolute_form,
    "obs-fold": lambda port: status(port, request("/", "X-Note: a", " folded")),
    "bare-cr": lambda port: status(port, request("/", "X-Note: a\rb")),
    "nul": lambda port: status(port, request("/", "X-Note: a\x00b")),
    "connection-names": named_hop_by_hop,
    "two-lengths": lambda port: status(
        port, request("/", "Content-Length: 1", "Content-Length: 2")
    ),
    "length-and-chunked": lambda port: status(
        port, request("/", "Content-Length: 3", "Transfer-Encoding: chunked", body=b"0\r\n\r\n")
    ),
    "request-trailers": lambda port: status(
        port,
        request("/", "Transfer-Encoding: chunked", body=b"2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n"),
    ),
    "upstream-103": lambda port: status(port, request("/early-hints")),
    "upstream-refuses": destination_refuses,
    "upstream-silent": lambda port: status(port, request("/silent")),
    "upstream-stale-get": stale_connection("GET"),
    "upstream-stale-post": stale_connection("POST"),
    "upstream-trailers": lambda port: status(port, request("/trailers")),
    "upstream-hop-by-hop": response_header("/hop-by-hop", "X-Backend"),
    "upstream-folded": response_header("/folded", "X-Folded"),
    "upstream-nul": response_header("/nul", "X-Nul"),
}


def documented() -> dict[str, tuple[str, str]]:
    """case → (nginx cell, sidecar cell), from the table in docs/reliability.md."""
    rows = {}
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and (match := re.fullmatch(r"`([a-z0-9-]+)`", cells[0])):
            rows[match.group(1)] = (cells[2], cells[3])
    return rows


def test_the_table_lists_every_case_and_no_other() -> None:
    assert sorted(documented()) == sorted(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_nginx_and_the_sidecar_do_what_the_table_says(proxies: Proxies, case: str) -> None:
    observed = (CASES[case](proxies.nginx), CASES[case](proxies.sidecar))
    assert observed == documented().get(case), f"{case}: nginx, sidecar observed {observed}"


def test_the_sidecar_still_serves_after_every_case(proxies: Proxies) -> None:
    assert reached(proxies.sidecar, request("/"))["upstream"] == "dev"
