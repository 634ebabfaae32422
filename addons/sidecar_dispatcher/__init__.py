"""Sidecar HTTP dispatcher: a mitmproxy addon that routes each request by one header.

    from sidecar_dispatcher import Dispatcher               # the addon (imports mitmproxy)
    from sidecar_dispatcher.config.load import load_config  # the config and core (do not)

Layers, each importing only from those before it (tests/test_layout.py): core/ and options
(pure), config/ (YAML into the core's values), observe/ (the decision handed on, access log,
metrics, health), _mitmproxy/ (every reach into mitmproxy's internals), proxy/ (the addons),
runner/ (the lean runner and its workers), tools/ (the command line). docs/development.md
follows one request through them.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

try:  # pyproject.toml owns the version; an installed package carries it in its metadata
    __version__ = metadata.version("sidecar-dispatcher")
except metadata.PackageNotFoundError:  # run from a source tree (mitmdump -s) without install
    __version__ = "0+unknown"

__all__ = ["Dispatcher", "__version__"]

if TYPE_CHECKING:
    from .proxy.addon import Dispatcher


def __getattr__(name: str) -> Any:
    # Imported on first use so that the config and routing modules load without mitmproxy.
    if name == "Dispatcher":
        from .proxy.addon import Dispatcher  # noqa: PLC0415

        return Dispatcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
