"""What mitmproxy's HTTP/1 layers leave open, closed: unbounded heads, trailers, 1xx, error pages.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_max_header_line=16384

Options (bytes; nginx's defaults): `dispatcher_max_request_line` 8192 (→ 414),
`dispatcher_max_header_line` 8192 and `dispatcher_max_request_head` 32768 (→ 431). Chunked
trailer fields, which mitmproxy would crash on, are dropped; so are a destination's 1xx
responses, which it would forward as the answer; its own error pages are plain text without
its message (which may name internal addresses). All live in `_mitmproxy`
(`core/request_heads.py`, `trailers.py`, `informational.py`, `error_pages.py`), installed once per
process when this addon loads.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from .. import _mitmproxy as internals
from .. import options
from ..core.request_heads import RequestHeadLimits

logger = logging.getLogger(__name__)

DEFAULTS = RequestHeadLimits()
OPTIONS = {option.name: option for option in options.REQUEST_HEAD_OPTIONS}


class InForce:
    """The limits in force for every connection of this process (the reader is process-wide)."""

    limits = DEFAULTS


class RequestLimits:
    name = "dispatcher-request-limits"

    def load(self, loader: Loader) -> None:
        for option in options.REQUEST_HEAD_OPTIONS:
            option.declare(loader)
        # Each: what it fixes, its check, its installation (once per process).
        fixes = (
            (
                "bounding request heads",
                internals.request_heads.check_read_headers,
                lambda: internals.bound_request_heads(lambda: InForce.limits),
            ),
            (
                "dropping chunked trailers",
                internals.trailers.check_trailers,
                internals.drop_chunked_trailers,
            ),
            (
                "dropping a destination's 1xx",
                internals.informational.check_informational,
                internals.drop_informational_responses,
            ),
            (
                "plain-text error pages",
                internals.error_pages.check_error_pages,
                internals.plain_error_pages,
            ),
        )
        for what, check, install in fixes:
            if (problem := check()) is not None:
                # an error at start-up stops mitmdump, as the runner refuses to start
                logger.error(
                    "mitmproxy %s lacks what %s relies on: %s",
                    internals.mitmproxy_version(),
                    what,
                    problem,
                )
                return
            install()

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
            request_line=values[options.MAX_REQUEST_LINE.name],
            header_line=values[options.MAX_HEADER_LINE.name],
            head=values[options.MAX_REQUEST_HEAD.name],
        )
