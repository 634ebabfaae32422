"""The mitmproxy addon: translate flows to and from the pure routing core.

    mitmdump --mode reverse:http://127.0.0.1:8081@5000 -s addons/dispatcher.py

Dispatch happens in `requestheaders`, before mitmproxy opens the upstream connection, so it is
also right when request bodies are streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import traceback

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from .config import ConfigError, default_config_path
from .config_file import ConfigFile, ConfigFileMissing
from .routing import AmbiguousRequest, Decision, resolve
from .rules import RuleSet
from .watch import FileWatcher

logger = logging.getLogger(__name__.rpartition(".")[0])

CONFIG_OPTION = "dispatcher_config"
WATCH_OPTION = "dispatcher_watch"
METADATA_KEY = "dispatcher"
DISPATCHED_MARKER = ":twisted_rightwards_arrows:"  # 🔀 in mitmweb's flow list
# mitmweb 12's default flow list columns; "comment", where each decision shows, is not among them.
MITMWEB_DEFAULT_COLUMNS = ["tls", "icon", "path", "method", "status", "size", "time"]


UPSTREAM_CA_OPTIONS = {"ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}


def check_upstream_trust() -> None:
    """Refuse a CA file or folder for upstream verification that cannot be loaded.

    mitmproxy itself only finds out at the first HTTPS connection, and then every request to
    an https destination fails with a bare "connection closed".
    """
    cafile = ctx.options.ssl_verify_upstream_trusted_ca or None
    capath = ctx.options.ssl_verify_upstream_trusted_confdir or None
    if cafile is None and capath is None:
        return
    try:
        if capath is not None and not os.path.isdir(capath):  # OpenSSL reads it lazily
            raise NotADirectoryError(f"{capath} is not a directory")
        ssl.create_default_context(cafile=cafile, capath=capath)
    except (OSError, ssl.SSLError) as e:
        names = " and ".join(
            f"{name}={value}"
            for name, value in (
                ("ssl_verify_upstream_trusted_ca", cafile),
                ("ssl_verify_upstream_trusted_confdir", capath),
            )
            if value
        )
        raise exceptions.OptionsError(
            f"cannot load the CA for upstream TLS, {names}: {e}"
        ) from None


def log_level_from_environment() -> int:
    """SIDECAR_LOGGING_LEVEL as a logging level (INFO when unset); ValueError when unknown."""
    name = os.environ.get("SIDECAR_LOGGING_LEVEL", "").strip().upper() or "INFO"
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        choices = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(f"SIDECAR_LOGGING_LEVEL={name!r} is not one of {choices}")
    return level


class Dispatcher:
    """Send each request to the destination its key header selects, patching its headers."""

    def __init__(self) -> None:
        self.rules: RuleSet | None = None
        self.keep_host_header = False  # mitmproxy's option, mirrored here off the request path
        self.config_file: ConfigFile | None = None
        self.watcher: FileWatcher | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            name=CONFIG_OPTION,
            typespec=str,
            default=default_config_path(),
            help="Path of the dispatcher's YAML config (key, destination, rewrites). "
            "Defaults to $SIDECAR_CONFIG, else config.yaml.",
        )
        loader.add_option(
            name=WATCH_OPTION,
            typespec=bool,
            default=True,
            help="Reload the dispatcher config when its file changes; an invalid file is "
            "not applied and the last good config keeps serving.",
        )

    def configure(self, updated: set[str]) -> None:
        if "keep_host_header" in updated:
            self.keep_host_header = ctx.options.keep_host_header
        if updated & UPSTREAM_CA_OPTIONS:
            check_upstream_trust()
        if CONFIG_OPTION in updated:
            self.reload()
        if updated & {CONFIG_OPTION, WATCH_OPTION}:
            self._restart_watcher()

    def reload(self) -> None:
        """Read the config named by `dispatcher_config` and swap it in whole.

        Raises OptionsError naming file:line:col when it is invalid; the rules in force stay.
        """
        path = ctx.options.dispatcher_config
        try:
            # Read here, not in load(): mitmproxy drops errors raised while loading an addon.
            level = log_level_from_environment()
        except ValueError as e:
            raise exceptions.OptionsError(str(e)) from None
        config_file = ConfigFile(path)
        try:
            rules = config_file.load()
        except ConfigError as e:
            raise exceptions.OptionsError(f"Invalid dispatcher config:\n{e}") from None
        logger.setLevel(level)
        self.rules, self.config_file = rules, config_file
        logger.info("dispatcher config %s loaded: %s", path, rules.summary())
        self._adjust_proxy_options()

    @command.command("dispatcher.reload")
    def reload_command(self) -> None:
        """Re-read the dispatcher config file now; an invalid file keeps the rules in force."""
        self.refresh("reload requested", force=True)

    def refresh(self, reason: str, *, force: bool = False) -> None:
        """Apply the config file if it changed; never raises, a bad file is logged and skipped."""
        if self.config_file is None:
            return
        path = self.config_file.path
        try:
            rules = self.config_file.load() if force else self.config_file.changed()
        except ConfigFileMissing:
            logger.error(
                "%s: config file %s is missing; still serving the last good config", reason, path
            )
            return
        except ConfigError as e:
            logger.error(
                "%s: config file %s is invalid; still serving the last good config:\n%s",
                reason,
                path,
                e,
            )
            return
        if rules is None:
            return
        self.rules = rules  # one assignment: requests already dispatched keep their decision
        logger.info("dispatcher config %s reloaded (%s): %s", path, reason, rules.summary())

    def running(self) -> None:
        if self.rules is None:  # added to a master by hand, and no option change configured it
            self.reload()
        self._explain_reverse_target()
        if self.watcher is None:  # configure() starts it when a loop already runs
            self._restart_watcher()
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (RuntimeError, NotImplementedError, ValueError):  # no loop, or not main thread
            logger.debug("SIGHUP reloading unavailable here")

    def done(self) -> None:
        if self.watcher:
            self.watcher.stop()
            self.watcher = None
        with contextlib.suppress(RuntimeError, NotImplementedError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def _on_sighup(self) -> None:
        self.refresh("SIGHUP", force=True)

    def _restart_watcher(self) -> None:
        if self.watcher:
            self.watcher.stop()
            self.watcher = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not running yet: running() starts it
            return
        if self.config_file and ctx.options.dispatcher_watch:
            self.watcher = FileWatcher(self.config_file.path, lambda: self.refresh("file changed"))
            self.watcher.start(loop)
            logger.info("watching %s for changes (%s)", self.config_file.path, self.watcher.method)

    def _adjust_proxy_options(self) -> None:
        """Set the mitmproxy options dispatching depends on; done on load, before any client."""
        options = ctx.options
        if logger.getEffectiveLevel() <= logging.DEBUG and "termlog_verbosity" in options:
            # SIDECAR_LOGGING_LEVEL=DEBUG asks for debug lines; the terminal would hide them.
            options.termlog_verbosity = "debug"
        if "web_columns" in options and list(options.web_columns) == MITMWEB_DEFAULT_COLUMNS:
            # Only mitmweb's untouched default is changed: a user's own column choice stays.
            options.web_columns = [*MITMWEB_DEFAULT_COLUMNS[:5], "comment", "size", "time"]
        if "connection_strategy" in options and options.connection_strategy == "eager":
            # Eager mode connects every client connection to the reverse-mode target first:
            # when that target is down, dispatched requests fail too. Lazy connects only
            # where the dispatcher sends the request.
            options.connection_strategy = "lazy"
            logger.info(
                "connection_strategy set to lazy: upstream connections are opened "
                "only to the destination each request is dispatched to"
            )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay:
            return
        try:
            self._dispatch(flow)
        except AmbiguousRequest as e:
            logger.warning("refused %s %s: %s", flow.request.method, flow.request.path, e)
            flow.response = _error_response(400, f"sidecar dispatcher: {e}")
        except Exception as e:  # fail closed: never let the request reach the wrong upstream
            logger.error(
                "dispatch failed for %s %s:\n%s",
                flow.request.method,
                flow.request.path,
                traceback.format_exc(),
            )
            flow.response = _error_response(502, f"sidecar dispatcher: dispatch failed ({e!r})")

    def error(self, flow: http.HTTPFlow) -> None:
        decision = flow.metadata.get(METADATA_KEY)
        if decision and flow.error:
            logger.warning(
                "%s → %s failed: %s",
                decision["rule"] or "default",
                decision["destination"],
                flow.error.msg,
            )

    def _explain_reverse_target(self) -> None:
        """Say where traffic goes when the reverse-mode URL and the default destination differ."""
        if self.rules is None:
            return
        default = self.rules.default
        for spec in ctx.options.mode:
            mode = ProxyMode.parse(spec)
            if not isinstance(mode, ReverseMode):
                continue
            # The scheme does not matter: every request gets its destination's scheme.
            if mode.address != (default.host, default.port):
                logger.info(
                    "reverse-mode target %s is not the config's default destination %s: "
                    "requests go where the config says, the reverse-mode target is unused",
                    mode.data,
                    default,
                )

    def _dispatch(self, flow: http.HTTPFlow) -> None:
        if self.rules is None:
            raise RuntimeError("the dispatcher has no configuration loaded")
        request = flow.request
        client_host_header = request.host_header
        decision = resolve(
            self.rules,
            request.headers,
            client_ip=flow.client_conn.peername[0] if flow.client_conn.peername else None,
            path=request.path,
            keep_host=self.keep_host_header,
        )
        destination = decision.destination
        # Scheme before host and port: the Host header mitmproxy derives depends on it.
        request.scheme = destination.scheme
        request.host = destination.host
        request.port = destination.port
        request.path = decision.path
        if self.keep_host_header:
            request.host_header = client_host_header  # setting .host rewrote it
        for header in decision.headers:
            if header.name.lower() == "host":
                request.host_header = header.value  # also :authority for HTTP/2
            else:
                request.headers[header.name] = header.value
        _record(flow, decision)


def _record(flow: http.HTTPFlow, decision: Decision) -> None:
    flow.metadata[METADATA_KEY] = decision.as_metadata()
    flow.comment = decision.describe()
    if decision.dispatched:
        flow.marked = DISPATCHED_MARKER
    logger.info(
        "%s → %s (%s) %s %s patched=[%s]",
        decision.label,
        decision.destination,
        decision.reason,
        flow.request.method,
        flow.request.path.partition("?")[0],
        ", ".join(decision.patched_names),
    )
    if logger.isEnabledFor(logging.DEBUG):
        for header in decision.headers:
            logger.debug("%s → set %s: %s", decision.label, header.name, header.value)


def _error_response(status: int, reason: str) -> http.Response:
    return http.Response.make(status, reason + "\n", {"Content-Type": "text/plain; charset=utf-8"})
