"""Real HAProxy (Debian's package) as a peer: the bench's dispatch as an HAProxy operator writes it.

It runs in the foreground (`-db`), one thread, from a config in the bench's temporary folder,
listening on loopback only, with no logging, stats socket or pid file: the system service is
never touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .nginx import UpstreamPorts
from .processes import Managed


def haproxy_binary() -> Path | None:
    """The haproxy program, or None (the suite then leaves the peer out and says so)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    return Path(found) if found else None


def haproxy_config(port: int, ports: UpstreamPorts) -> str:
    """The same dispatch as the bench's config and nginx's `map`: `environment: qa` to the qa
    destination, `dev` to the default one with `Host: example.com`, both with `dispatched: true`,
    X-Forwarded-For appended, Host otherwise the destination's authority."""
    default, qa = f"127.0.0.1:{ports.default}", f"127.0.0.1:{ports.qa}"
    return f"""global
    nbthread 1
    maxconn 8192

defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s
    # appends the client's address as X-Forwarded-For, as the dispatcher and nginx do
    option forwardfor

frontend dispatch
    bind 127.0.0.1:{port}
    acl env_qa  hdr(environment) -m str qa
    acl env_dev hdr(environment) -m str dev
    http-request set-header dispatched true if env_qa or env_dev
    use_backend qa_destination if env_qa
    default_backend default_destination

backend qa_destination
    http-request set-header Host {qa}
    http-reuse always
    server qa {qa}

backend default_destination
    http-request set-header Host example.com if {{ hdr(environment) -m str dev }}
    http-request set-header Host {default} unless {{ hdr(environment) -m str dev }}
    http-reuse always
    server default {default}
"""


def haproxy_process(name: str, workdir: Path, config_text: str, cpus: str | None) -> Managed:
    """A foreground HAProxy with its config under `workdir`, not started yet."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy not found: apt-get install -y haproxy")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "haproxy.cfg"
    config.write_text(config_text)
    # -db: stay in the foreground (no daemon, no master process); stopped by SIGTERM like nginx
    argv = [str(binary), "-f", str(config), "-db"]
    return Managed(name, argv, log_path=workdir / "output.log", cpus=cpus)
