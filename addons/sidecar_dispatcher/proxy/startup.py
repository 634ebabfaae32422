"""What the dispatcher settles around itself before the first client: logging, trust, options.

    Dispatcher().addons[0]   # StartupPolicy: configured before the config is loaded

Each of these is a check or a setting outside the routing itself: the log level from
$SIDECAR_LOGGING_LEVEL, a CA for upstream TLS that must load, and the options of other mitmproxy
addons that dispatching depends on. It is the one place that changes other addons' options.
"""

from __future__ import annotations

import logging
import os
import ssl

from mitmproxy import ctx, exceptions

from .. import options
from .live_config import CONFIG_OPTION

logger = logging.getLogger(__name__)
# Every module logs below the package's logger; SIDECAR_LOGGING_LEVEL sets its level.
package_logger = logging.getLogger("sidecar_dispatcher")

UPSTREAM_CA_OPTIONS = frozenset(
    {"ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}
)
# mitmweb 12's default flow list columns; "comment", where each decision shows, is not among them.
MITMWEB_DEFAULT_COLUMNS = ["tls", "icon", "path", "method", "status", "size", "time"]


class StartupPolicy:
    """Refuses what would fail every request later, and adjusts the options dispatch needs."""

    name = "dispatcher-startup"

    def configure(self, updated: set[str]) -> None:
        if updated & UPSTREAM_CA_OPTIONS:
            check_upstream_trust()
        if CONFIG_OPTION in updated:  # start-up, in every host: mitmdump, mitmweb, the runner
            try:
                # Read here, not in load(): mitmproxy drops errors raised while loading an addon.
                package_logger.setLevel(log_level_from_environment())
            except ValueError as e:
                raise exceptions.OptionsError(str(e)) from None
            adjust_proxy_options()


def log_level_from_environment() -> int:
    """SIDECAR_LOGGING_LEVEL as a logging level (INFO when unset); ValueError when unknown."""
    name = os.environ.get(options.LOGGING_LEVEL_VARIABLE, "").strip().upper() or "INFO"
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        choices = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(f"{options.LOGGING_LEVEL_VARIABLE}={name!r} is not one of {choices}")
    return level


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


def adjust_proxy_options() -> None:
    """Set the mitmproxy options dispatching depends on; done at start-up, before any client.

    Options that the host did not load (termlog, mitmweb's columns) are left alone.
    """
    options = ctx.options
    if package_logger.getEffectiveLevel() <= logging.DEBUG and "termlog_verbosity" in options:
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
