"""The peers: every way of putting a dispatcher between the client and the upstream.

Each peer dispatches `environment: qa` to the qa destination with `dispatched: true` added,
except `direct` (no proxy at all) and `mitmdump-bare` (a reverse proxy straight to the qa
destination: mitmproxy's own cost, without any dispatch).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sidecar_dispatcher.testing.configs import dispatch_config
from sidecar_dispatcher.testing.loopback import free_port

from .haproxy import haproxy_binary, haproxy_config, haproxy_process
from .nginx import UpstreamPorts, dispatcher_http, nginx_process
from .processes import Managed, Pinning

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPT = REPOSITORY / "addons" / "dispatcher.py"
ENTRY_POINTS = {
    "runner": "import sys\nfrom sidecar_dispatcher.tools.cli import main\nsys.exit(main())",
    "mitmdump": "from mitmproxy.tools.main import mitmdump\nmitmdump()",
}


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    kind: str  # "direct", "nginx", "haproxy", "mitmdump" or "runner"
    addon: bool = False  # mitmdump with -s addons/dispatcher.py
    map_remote: bool = False  # mitmdump with the built-in map_remote + modify_headers
    workers: int = 1
    options: tuple[str, ...] = ()  # extra `--set name=value`
    env: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    # Python run before mitmdump's or the runner's entry point, in the same process: measures a
    # proposed change without making it (the options study only).
    prelude: str = ""
    # YAML added to the bench's dispatch config for this peer alone (e.g. 100 routes).
    extra_config: str = ""

    @property
    def dispatches(self) -> bool:
        return self.kind in ("nginx", "haproxy", "runner") or self.addon or self.map_remote

    @property
    def spreads(self) -> bool:
        """Runs on every core (its workers), sharing the load side's core."""
        return self.workers > 1


SUITE_PEERS = (
    Peer("direct", "upstream direct (nginx)", "direct", note="no proxy: the ceiling"),
    Peer("nginx-map", "nginx `map $http_environment`", "nginx"),
    Peer("haproxy", "HAProxy `use_backend` on `hdr(environment)`", "haproxy"),
    Peer("mitmdump-bare", "mitmdump --mode reverse, no addon", "mitmdump", note="no dispatch"),
    Peer(
        "mitmdump-map-remote",
        "mitmdump + map_remote + modify_headers",
        "mitmdump",
        map_remote=True,
        note="no X-Forwarded-For",
    ),
    Peer("mitmdump-addon", "mitmdump -s addons/dispatcher.py", "mitmdump", addon=True),
    Peer("runner-1", "sidecar-dispatcher run", "runner"),
    Peer(
        "runner-2",
        "sidecar-dispatcher run --workers 2",
        "runner",
        workers=2,
        note="two cores (see Pinning)",
    ),
)


def missing_program(peer: Peer) -> str | None:
    """Why `peer` cannot run on this machine, or None. Only HAProxy is optional: nginx, wrk and
    k6 drive every other measurement, and the bench fails without them."""
    if peer.kind == "haproxy" and haproxy_binary() is None:
        return "haproxy not installed (apt-get install -y haproxy, or make system-packages)"
    return None


def bench_config(ports: UpstreamPorts) -> str:
    """The dispatcher config every dispatching peer implements: the README's example, with qa
    sent to destination-app's page (`map_remote_options` and nginx's map say the same)."""
    return dispatch_config(ports.url(ports.default), qa=ports.url(ports.qa))


def map_remote_options(ports: UpstreamPorts) -> list[str]:
    """The same dispatch with mitmproxy's built-in addons (filters match raw `name: value\\r`)."""
    default, qa = ports.url(ports.default), ports.url(ports.qa)
    dev_filter, qa_filter = r'~hq "^environment: dev\r$"', r'~hq "^environment: qa\r$"'
    return [
        f"map_remote=|{qa_filter}|^{default}|{qa}",
        f"modify_headers=|{qa_filter}|dispatched|true",
        f"modify_headers=|{dev_filter}|Host|example.com",
        f"modify_headers=|{dev_filter}|dispatched|true",
    ]


@dataclass
class RunningPeer:
    peer: Peer
    port: int
    process: Managed | None  # None for `direct`

    def rss_bytes(self) -> int:
        return self.process.rss_bytes() if self.process else 0

    def cpu_seconds(self) -> float:
        return self.process.cpu_seconds() if self.process else 0.0


def launch(
    peer: Peer, ports: UpstreamPorts, workdir: Path, pinning: Pinning, config: Path
) -> RunningPeer:
    """Start `peer` (not waiting for it: see `wait_ready`)."""
    if peer.kind == "direct":
        return RunningPeer(peer, ports.qa, None)
    port = free_port()
    own = workdir / peer.name
    own.mkdir(parents=True, exist_ok=True)
    cpus = pinning.both if peer.spreads else pinning.proxy
    if peer.kind == "nginx":
        process = nginx_process(peer.name, own, dispatcher_http(port, ports), cpus)
        return RunningPeer(peer, port, process.start())
    if peer.kind == "haproxy":
        process = haproxy_process(peer.name, own, haproxy_config(port, ports), cpus)
        return RunningPeer(peer, port, process.start())
    if peer.extra_config:
        config = own / "config.yaml"
        config.write_text(bench_config(ports) + peer.extra_config)
    common = ["--set", "listen_host=127.0.0.1", "--set", f"confdir={own / 'confdir'}"]
    for option in peer.options:
        common += ["--set", option]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SIDECAR_CONFIG": str(config),
        "SIDECAR_ADMIN": "",  # peers run side by side: no two on the default admin port
        # mitmdump + addon and the runner at the same log level (the defaults), whatever the
        # caller's environment says; a peer's own `env` may still change them
        "SIDECAR_LOGGING_LEVEL": "INFO",
        "SIDECAR_ACCESS_LOG": "text",
        **peer.env,
    }
    if peer.kind == "runner":
        # --workers even for one: the measured count never depends on the runner's default
        argv = [str(BIN / "sidecar-dispatcher"), "run", "--workers", str(peer.workers), *common]
        env["SIDECAR_PORT"] = str(port)
    else:
        # bare mitmdump forwards to the page the dispatch would choose; the others decide
        target = ports.qa if not peer.dispatches else ports.default
        argv = [str(BIN / "mitmdump"), "--mode", f"reverse:{ports.url(target)}@{port}", *common]
        if peer.addon:
            argv += ["-s", str(SCRIPT)]
        if peer.map_remote:
            for option in map_remote_options(ports):
                argv += ["--set", option]
    if peer.prelude:  # the same arguments, after the prelude, in `python -c`
        argv = [sys.executable, "-c", f"{peer.prelude}\n{ENTRY_POINTS[peer.kind]}", *argv[1:]]
    process = Managed(peer.name, argv, log_path=own / "output.log", cpus=cpus, env=env)
    return RunningPeer(peer, port, process.start())


def wait_ready(running: RunningPeer, timeout: float = 120.0) -> None:
    """Until every process of the peer listens."""
    process = running.process
    if process is None:
        return
    if running.peer.workers > 1:  # the first worker accepts before the others: each logs it
        process.wait_for_log(
            f"listening at 127.0.0.1:{running.port}", count=running.peer.workers, timeout=timeout
        )
        return
    process.wait_for_port(running.port, timeout)
