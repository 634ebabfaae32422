"""Real nginx, twice: the upstream every peer forwards to, and the `map $http_environment` peer.

Both run in the foreground (`daemon off`) with one worker and every path (pid, logs, temp
folders) in the benchmark's own temporary folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .processes import Managed

# The page of the original project's destination-app; the k6 checks look for its title.
PAGE_MARKER = "<h1>destination-app</h1>"
DESTINATION_PAGE = f"""<!doctype html>
<html>
<head><meta charset="utf-8"><title>destination-app</title></head>
<body>
{PAGE_MARKER}
<p>This page is served by destination-app, reached through the sidecar.</p>
</body>
</html>
"""
DEFAULT_PAGE = "<!doctype html><title>default</title><h1>default destination</h1>\n"
LARGE_PATH = "/100k.bin"
LARGE_SIZE = 100 * 1024


def nginx_binary() -> Path:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("nginx not found: install Debian's nginx-light")
    return Path(found)


@dataclass(frozen=True)
class UpstreamPorts:
    """The two destinations of the benchmark's dispatch config, served by one nginx."""

    default: int  # the config's default destination (and reverse-mode target)
    qa: int  # where `environment: qa` goes: destination-app's page and the 100 KB file

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"


def _common_http() -> str:
    # Keep-alive without a request limit: the proxies' costs are measured, not reconnections.
    return """
    types { text/html html; application/octet-stream bin; }
    default_type application/octet-stream;
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
"""


def _main_config(workdir: Path, http_body: str) -> str:
    temp_paths = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would run as `nobody`, who cannot read the private temporary folder.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
{_common_http()}
{temp_paths}
{http_body}
}}
"""


def write_docroot(root: Path) -> None:
    (root / "default").mkdir(parents=True, exist_ok=True)
    (root / "qa").mkdir(parents=True, exist_ok=True)
    (root / "default" / "index.html").write_text(DEFAULT_PAGE)
    (root / "qa" / "index.html").write_text(DESTINATION_PAGE)
    (root / "qa" / LARGE_PATH.lstrip("/")).write_bytes(bytes(range(256)) * (LARGE_SIZE // 256))


def upstream_http(ports: UpstreamPorts, docroot: Path) -> str:
    """Static destinations; each says who served it and echoes the dispatch patch it got."""

    def server(port: int, name: str, extra: str) -> str:
        return f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {docroot / name};
        location / {{
            index index.html;
            add_header X-Served-By {name} always;
            add_header Received-Dispatched $http_dispatched always;
{extra}
        }}
    }}"""

    return server(ports.default, "default", "") + server(
        ports.qa, "qa", "            add_header Destination_app ok always;"
    )


def dispatcher_http(port: int, ports: UpstreamPorts) -> str:
    """The same dispatch as the benchmark's config, as an nginx operator would write it."""
    return f"""
    map $http_environment $destination {{
        default default_destination;
        dev     default_destination;
        qa      qa_destination;
    }}
    map $http_environment $destination_host {{
        default 127.0.0.1:{ports.default};
        dev     example.com;
        qa      127.0.0.1:{ports.qa};
    }}
    map $http_environment $dispatched {{
        default "";
        dev     true;
        qa      true;
    }}
    upstream default_destination {{ server 127.0.0.1:{ports.default}; keepalive 64; }}
    upstream qa_destination {{ server 127.0.0.1:{ports.qa}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://$destination;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $destination_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header dispatched $dispatched;
        }}
    }}"""


def nginx_process(name: str, workdir: Path, http_body: str, cpus: str | None) -> Managed:
    """An nginx with its own prefix, config, pid and logs under `workdir`, not started yet."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(_main_config(workdir, http_body))
    argv = [
        str(nginx_binary()),
        "-p",
        str(workdir),
        "-c",
        str(config),
        "-e",
        str(workdir / "error.log"),
        "-g",
        "daemon off;",
    ]
    return Managed(name, argv, log_path=workdir / "stdout.log", cpus=cpus)
