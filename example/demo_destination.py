"""A tiny HTTP server that says who it is and echoes what it received, for the quick start.

    python example/demo_destination.py --name default --port 8081

Every method is answered with a plain-text page naming this destination and listing the request
line and headers, so `curl` shows at a glance where the sidecar sent a request.
"""

from __future__ import annotations

import argparse
import contextlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    destination_name = "demo"
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        lines = [
            f"demo destination '{self.destination_name}' ({self.local_address()}) received:",
            f"{self.command} {self.path}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
            f"({len(body)} body bytes)",
            "",
        ]
        payload = "\n".join(lines).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Destination", self.destination_name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def local_address(self) -> str:
        host, port = self.connection.getsockname()[:2]
        return f"{host}:{port}"

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        print(f"[{self.destination_name}] {self.address_string()} {format % args}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="demo", help="name shown in every answer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    arguments = parser.parse_args()
    handler = type("Handler", (EchoHandler,), {"destination_name": arguments.name})
    server = ThreadingHTTPServer((arguments.host, arguments.port), handler)
    print(
        f"demo destination '{arguments.name}' on http://{arguments.host}:{arguments.port}",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
