"""Every option the dispatcher declares and every environment variable it reads, in one place.

    CONFIG.declare(loader)                       # in an addon's load(): --set dispatcher_config=…
    CONFIG.environment_default()                 # $SIDECAR_CONFIG, else config.yaml

The addons declare their `--set` options from these specs, and the `run` command reads the same
names, defaults and variables, so that a name or a default has one owner. Nothing here imports
mitmproxy: the run command's supervisor does not load it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .core.request_heads import RequestHeadLimits


class OptionLoader(Protocol):
    """What `declare` needs of mitmproxy's `Loader` (its `add_option`)."""

    def add_option(
        self,
        name: str,
        typespec: type,
        default: object,
        help: str,
        choices: Sequence[str] | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Option[T]:
    """A `--set` option: its name, type, default and the help `--options` lists."""

    name: str
    typespec: type[T]
    default: T
    help: str
    choices: tuple[str, ...] | None = None
    environment: str | None = None  # the variable whose value, when set, is the default

    def environment_default(self) -> T | str:
        """The variable's value when it is set and not empty, else the default."""
        if self.environment is not None and (value := os.environ.get(self.environment)):
            return value
        return self.default

    def declare(self, loader: OptionLoader, default: T | None = None) -> None:
        """Declare the option; `default` when given (e.g. an environment value, checked)."""
        loader.add_option(
            name=self.name,
            typespec=self.typespec,
            default=self.default if default is None else default,
            help=self.help,
            choices=self.choices,
        )


# --- environment variables (the container's interface)

CONFIG_VARIABLE = "SIDECAR_CONFIG"  # the config file, when no option names one
PORT_VARIABLE = "SIDECAR_PORT"  # the run command's listening port
ADMIN_VARIABLE = "SIDECAR_ADMIN"  # the run command's admin listener; "" turns it off
ACCESS_LOG_VARIABLE = "SIDECAR_ACCESS_LOG"  # text, json or off
LOGGING_LEVEL_VARIABLE = "SIDECAR_LOGGING_LEVEL"  # the package logger's level; INFO when unset
OPTIMIZE_VARIABLE = "SIDECAR_PYTHON_OPTIMIZE"  # "0": the run command keeps Python's assertions
SUPERVISOR_PID_VARIABLE = "SIDECAR_SUPERVISOR_PID"  # in a worker's environment: who it belongs to

DEFAULT_CONFIG_PATH = "config.yaml"
DEFAULT_PORT = 5000
DEFAULT_ADMIN = "127.0.0.1:9901"  # the run command's; under mitmdump the admin listener is off
SHUTDOWN_GRACE = 5.0  # seconds open connections get to finish on SIGTERM, as in the Go version

# --- the addons' options

CONFIG = Option(
    "dispatcher_config",
    str,
    DEFAULT_CONFIG_PATH,
    "Path of the dispatcher's YAML config (key, destination, rewrites). "
    "Defaults to $SIDECAR_CONFIG, else config.yaml.",
    environment=CONFIG_VARIABLE,
)
WATCH = Option(
    "dispatcher_watch",
    bool,
    True,
    "Reload the dispatcher config when its file changes; an invalid file is "
    "not applied and the last good config keeps serving.",
)
ACCESS_LOG_FORMATS = ("text", "json", "off")
ACCESS_LOG = Option(
    "dispatcher_access_log",
    str,
    "text",
    "One line per completed request: text (through mitmproxy's log), json (one "
    "object per line on standard output) or off. Defaults to $SIDECAR_ACCESS_LOG, "
    "else text.",
    choices=ACCESS_LOG_FORMATS,
    environment=ACCESS_LOG_VARIABLE,
)
ADMIN = Option(
    "dispatcher_admin",
    str,
    "",
    "HOST:PORT of the admin listener serving /metrics, /healthz and /readyz "
    "(empty: none). It never proxies anything.",
)
MIRROR_CONCURRENCY = Option(
    "dispatcher_mirror_concurrency",
    int,
    32,
    "Copies of requests to route mirrors in flight at most, per process; a copy "
    "beyond it is dropped and counted. 0 sends none.",
)
UPSTREAM_TIMEOUT = Option(
    "dispatcher_upstream_timeout",
    str,
    "60",
    "Seconds from a complete request until its response headers must arrive, "
    "else the sidecar answers 504 and resets the request upstream. A route's timeout "
    "overrides it; 0 turns it off.",
)
_HEAD_LIMITS = RequestHeadLimits()  # nginx's defaults
MAX_REQUEST_LINE = Option(
    "dispatcher_max_request_line",
    int,
    _HEAD_LIMITS.request_line,
    "Longest request line (method, URL, version) in bytes; longer gets 414.",
)
MAX_HEADER_LINE = Option(
    "dispatcher_max_header_line",
    int,
    _HEAD_LIMITS.header_line,
    "Longest request header line in bytes; longer gets 431 and the connection closed.",
)
MAX_REQUEST_HEAD = Option(
    "dispatcher_max_request_head",
    int,
    _HEAD_LIMITS.head,
    "Largest request head (request line and headers) in bytes; larger gets 431.",
)
REQUEST_HEAD_OPTIONS = (MAX_REQUEST_LINE, MAX_HEADER_LINE, MAX_REQUEST_HEAD)

ALL = (
    CONFIG,
    WATCH,
    ACCESS_LOG,
    ADMIN,
    MIRROR_CONCURRENCY,
    UPSTREAM_TIMEOUT,
    *REQUEST_HEAD_OPTIONS,
)


def default_config_path() -> str:
    """Where the config is read from unless told otherwise: $SIDECAR_CONFIG, else config.yaml."""
    return str(CONFIG.environment_default())
