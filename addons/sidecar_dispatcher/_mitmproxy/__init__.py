"""Every use this project makes of mitmproxy beyond its public addon API, in one place.

    problems = self_check(master)   # [] when the installed mitmproxy has all of them

mitmproxy's addon API (hooks, options, commands, flows) is public. Some of this project relies
on more: the lean runner on private attributes, a discouraged call and one replaced method
(`lean_master.py`); the upstream timeout (`proxy/timeouts.py`, under mitmdump too) on two wrapped
methods of mitmproxy's HTTP layer and an injected event (`overdue.py`, checks in
`overdue_checks.py`); bounded request heads (`proxy/request_limits.py`) on mitmproxy's HTTP/1 head
reader (`core/request_heads.py`); chunked trailers on its HTTP/1 body readers (`trailers.py`); 1xx
from a destination on its HTTP/1 client (`informational.py`); plain-text error pages on its
error page functions (`error_pages.py`); one retry on a stale keep-alive connection on its
HTTP stream (`stale_retry.py`, called from overdue.py's wrapper); the runner's fast hook path
on its connection handler and addon manager (`fast_hooks.py`), and the runner's cheaper header
look-ups (`header_lookups.py`), flow ids (`flow_ids.py`) and access lines in the terminal log's
format (`terminal_lines.py`); and `diff` on mitmproxy's flow format (`flow_file.py`). Each is
listed in `REACHES` with a check that it is still there and shaped as this code expects.
`tests/test_mitmproxy_internals.py` runs every check against the installed mitmproxy, and the
runner runs them at start-up and refuses to start, naming the internal and the mitmproxy
version, instead of misbehaving after an upgrade (under mitmdump, `UpstreamTimeouts` and
`RequestLimits` run the checks of their own reaches and log an error, which stops mitmdump at
start-up). A new reach goes here, with a check in `REACHES` and a test; no other module of the
package imports a private name of mitmproxy.
"""

from __future__ import annotations

from importlib import metadata

from mitmproxy import master

from .checking import Reach, source_lacks, stock_method
from .fixes import (
    error_pages,
    flow_file,
    informational,
    lean_master,
    overdue,
    overdue_checks,
    request_heads,
    stale_retry,
    trailers,
)
from .fixes.error_pages import plain_error_pages
from .fixes.informational import drop_informational_responses
from .fixes.lean_master import (
    configure_all,
    drop_legacy_log_events,
    open_connections,
    share_listening_port,
    stop_listening,
)
from .fixes.overdue import Delivery, ResponseHeadersOverdue, answer_overdue_flows, inject_overdue
from .fixes.overdue_checks import _check_http_layer, _check_http_stream
from .fixes.request_heads import bound_request_heads
from .fixes.trailers import drop_chunked_trailers
from .speed import fast_hooks, flow_ids, header_lookups, terminal_lines
from .speed.flow_ids import pooled_ids
from .speed.header_lookups import faster_header_lookups
from .speed.terminal_lines import direct_terminal_lines

__all__ = [
    "REACHES",
    "Delivery",
    "InternalsChanged",
    "Reach",
    "ResponseHeadersOverdue",
    "_check_http_layer",
    "_check_http_stream",
    "answer_overdue_flows",
    "bound_request_heads",
    "configure_all",
    "direct_terminal_lines",
    "drop_chunked_trailers",
    "drop_informational_responses",
    "drop_legacy_log_events",
    "error_pages",
    "faster_header_lookups",
    "flow_file",
    "flow_ids",
    "header_lookups",
    "informational",
    "inject_overdue",
    "lean_master",
    "mitmproxy_version",
    "open_connections",
    "overdue",
    "overdue_checks",
    "plain_error_pages",
    "pooled_ids",
    "request_heads",
    "self_check",
    "share_listening_port",
    "source_lacks",
    "stale_retry",
    "stock_method",
    "stop_listening",
    "terminal_lines",
    "trailers",
]


def mitmproxy_version() -> str:
    return metadata.version("mitmproxy")


REACHES = (
    *lean_master.LEAN_MASTER_REACHES,
    *overdue_checks.OVERDUE_REACHES,
    *request_heads.REQUEST_HEAD_REACHES,
    *flow_file.FLOW_FILE_REACHES,
    *trailers.TRAILER_REACHES,
    *fast_hooks.FAST_HOOK_REACHES,
    *informational.INFORMATIONAL_REACHES,
    *error_pages.ERROR_PAGE_REACHES,
    *stale_retry.STALE_RETRY_REACHES,
    *header_lookups.HEADER_LOOKUP_REACHES,
    *flow_ids.FLOW_ID_REACHES,
    *terminal_lines.TERMINAL_LINE_REACHES,
)


def self_check(lean: master.Master, *, timeouts_only: bool = False) -> list[str]:
    """One line per internal that this mitmproxy lacks or has changed; [] when all hold.

    `timeouts_only`: those of the upstream timeout, which mitmdump needs too.
    """
    problems = []
    for reach in REACHES:
        if timeouts_only and not reach.for_timeouts:
            continue
        problem = reach.check(lean)
        if problem is not None:
            problems.append(f"{reach.name}: {problem}")
    return problems


class InternalsChanged(RuntimeError):
    """The installed mitmproxy lacks internals the runner relies on."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"mitmproxy {mitmproxy_version()} lacks internals the runner relies on:\n{listed}\n"
            "Install the mitmproxy version this package declares (pyproject.toml), or run "
            "`mitmdump -s addons/dispatcher.py`, which uses only mitmproxy's public addon API."
        )
