"""What the lean runner reaches into: legacy log events, configure-all, the shared port, drain.

drop_legacy_log_events(master); configure_all(master); share_listening_port()
"""

from __future__ import annotations

import asyncio
import inspect

from mitmproxy import hooks, master
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import mode_servers

from ..checking import Reach


def drop_legacy_log_events(lean: master.Master) -> None:
    """Stop turning every log record into a deprecated `add_log` event for all addons.

    None of the runner's addons listens for it, and it costs ~2 % of throughput (bench/).
    """
    lean._legacy_log_events.uninstall()


def configure_all(lean: master.Master) -> None:
    """Send every addon one configure event naming every option, as mitmdump's start-up does.

    `AddonManager.trigger` is public but documented as discouraged; the runner needs this
    synchronous form to load the config and the CA before anything listens.
    """
    lean.addons.trigger(hooks.ConfigureHook(set(lean.options.keys())))


def share_listening_port() -> None:
    """Make reverse-mode listeners bind with SO_REUSEPORT, so that workers share the port.

    mitmproxy's `ReverseInstance.listen` (inherited from `AsyncioServerInstance`) creates its
    TCP listener with `asyncio.start_server(self.handle_stream, host, port)`; this replaces it,
    in this process only, with the same call plus `reuse_port=True`. Workers need a fixed TCP
    port: port 0 (mitmproxy's "pick one") and UDP modes are refused.
    """

    async def listen(self: mode_servers.ReverseInstance, host: str, port: int) -> list[object]:
        if self.mode.transport_protocol != "tcp":
            raise OSError(f"--workers needs a TCP listener, not {self.mode.transport_protocol}")
        if port == 0:
            raise OSError("--workers needs a fixed port to share, not port 0")
        server = await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True)
        return [server]

    mode_servers.ReverseInstance.listen = listen  # type: ignore[method-assign,assignment]


def _proxy_server(lean: master.Master) -> proxyserver.Proxyserver:
    server: proxyserver.Proxyserver = lean.addons.get("proxyserver")
    return server


async def stop_listening(lean: master.Master) -> None:
    """Close every listening socket; connections already accepted carry on."""
    await _proxy_server(lean).servers.update([])


def open_connections(lean: master.Master) -> int:
    """How many client connections the proxy is serving now."""
    return len(_proxy_server(lean).connections)


# --- their checks


def _check_legacy_log_events(lean: master.Master) -> str | None:
    events = getattr(lean, "_legacy_log_events", None)
    if events is None:
        return "the master has no _legacy_log_events attribute"
    if not callable(getattr(events, "uninstall", None)):
        return "_legacy_log_events has no uninstall() method"
    return None


def _check_trigger(lean: master.Master) -> str | None:
    trigger = getattr(lean.addons, "trigger", None)
    if trigger is None:
        return "AddonManager has no trigger() method"
    if inspect.iscoroutinefunction(trigger):
        return "AddonManager.trigger() is a coroutine now; the runner calls it synchronously"
    return None


# What share_listening_port() replicates; if mitmproxy's listen() no longer makes this call,
# the replacement would silently differ from it.
STOCK_LISTEN_CALL = "asyncio.start_server(self.handle_stream, host, port)"


def _check_reverse_listen(_lean: master.Master) -> str | None:
    listen = getattr(mode_servers.ReverseInstance, "listen", None)
    if listen is None:
        return "ReverseInstance has no listen() method"
    if list(inspect.signature(listen).parameters) != ["self", "host", "port"]:
        return f"ReverseInstance.listen{inspect.signature(listen)} is not (self, host, port)"
    if listen.__qualname__ != "AsyncioServerInstance.listen":
        return "ReverseInstance.listen is already replaced (or mitmproxy moved it)"
    try:
        source = inspect.getsource(listen)
    except (OSError, TypeError):
        return "the source of ReverseInstance.listen cannot be read to compare it"
    if STOCK_LISTEN_CALL not in source:
        return f"ReverseInstance.listen no longer calls {STOCK_LISTEN_CALL}"
    return None


def _check_proxy_server(lean: master.Master) -> str | None:
    server = lean.addons.get("proxyserver")
    if server is None:
        return "no proxyserver addon is loaded"
    servers = getattr(server, "servers", None)
    if not inspect.iscoroutinefunction(getattr(servers, "update", None)):
        return "Proxyserver.servers has no async update() method"
    if not isinstance(getattr(server, "connections", None), dict):
        return "Proxyserver.connections is not a dict of open connections"
    return None


LEAN_MASTER_REACHES = (
    Reach("Master._legacy_log_events.uninstall()", _check_legacy_log_events),
    Reach("AddonManager.trigger()", _check_trigger),
    Reach("ReverseInstance.listen (replaced for --workers)", _check_reverse_listen),
    Reach("Proxyserver.servers.update() and .connections", _check_proxy_server),
)
