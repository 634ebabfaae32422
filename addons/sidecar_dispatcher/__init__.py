"""Sidecar HTTP dispatcher: a mitmproxy addon that routes each request by one header.

from sidecar_dispatcher import Dispatcher      # the addon (imports mitmproxy)
from sidecar_dispatcher.config.load import load_config  # the pure core (does not)
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
