"""What mitmproxy's HTTP/1 reader leaves open, closed: unbounded heads and chunked trailers.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_max_header_line=16384

Options (bytes; nginx's defaults): `dispatcher_max_request_line` 8192 (→ 414),
`dispatcher_max_header_line` 8192 and `dispatcher_max_request_head` 32768 (→ 431). Chunked
trailer fields, which mitmproxy would crash on, are dropped. Both live in `mitmproxy_internals`
(`request_heads.py`, `trailers.py`), installed once per process when this addon loads.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from . import mitmproxy_internals as internals
from .request_heads import RequestHeadLimits

logger = logging.getLogger(__name__)

DEFAULTS = RequestHeadLimits()
OPTIONS = {
    "dispatcher_max_request_line": (
        DEFAULTS.request_line,
        "Longest request line (method, URL, version) in bytes; longer gets 414.",
    ),
    "dispatcher_max_header_line": (
        DEFAULTS.header_line,
        "Longest request header line in bytes; longer gets 431 and the connection closed.",
    ),
    "dispatcher_max_request_head": (
        DEFAULTS.head,
        "Largest request head (request line and headers) in bytes; larger gets 431.",
    ),
}


class InForce:
    """The limits in force for every connection of this process (the reader is process-wide)."""

    limits = DEFAULTS


class RequestLimits:
    name = "dispatcher-request-limits"

    def load(self, loader: Loader) -> None:
        for option, (default, help_text) in OPTIONS.items():
            loader.add_option(name=option, typespec=int, default=default, help=help_text)
        problem = internals.request_heads.check_read_headers()
        if problem is not None:  # an error at start-up stops mitmdump, as the runner refuses
            logger.error(
                "mitmproxy %s lacks what bounding request heads relies on: %s",
                internals.mitmproxy_version(),
                problem,
            )
            return
        internals.bound_request_heads(lambda: InForce.limits)
        # HTTP/1 framing at the same door: trailers mitmproxy would crash on are dropped.
        if (trailers_problem := internals.trailers.check_trailers()) is not None:
            logger.error(
                "mitmproxy %s lacks what dropping chunked trailers relies on: %s",
                internals.mitmproxy_version(),
                trailers_problem,
            )
            return
        internals.drop_chunked_trailers()

    def configure(self, updated: set[str]) -> None:
        if not updated & OPTIONS.keys():
            return
        values = {option: ctx.options.__getattr__(option) for option in OPTIONS}
        for option, value in values.items():
            if not 256 <= value <= 1_048_576:
                raise exceptions.OptionsError(
                    f"{option}={value}: expected a number of bytes from 256 to 1048576"
                )
        InForce.limits = RequestHeadLimits(
            request_line=values["dispatcher_max_request_line"],
            header_line=values["dispatcher_max_header_line"],
            head=values["dispatcher_max_request_head"],
        )
