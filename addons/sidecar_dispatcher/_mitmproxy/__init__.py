"""Every use this project makes of mitmproxy beyond its public addon API, in one place.

    if problems := self_check(master, fixes_only=True):   # the runner, before it serves
        raise InternalsChanged(problems)
    usable = usable_shortcuts(master)   # the speed shortcuts whose internals hold; warns once

mitmproxy's addon API (hooks, options, commands, flows) is public. This project relies on more,
of two kinds, one subpackage each; every reach is listed in `REACHES` with a check that it is
still there and shaped as this code expects.

`fixes/`: what correctness depends on. The upstream timeout (`proxy/timeouts.py`) on two wrapped
methods of mitmproxy's HTTP layer and an injected event (`overdue.py`, checks in
`overdue_checks.py`), and one retry on a stale keep-alive connection (`stale_retry.py`, called
from overdue.py's wrapper); bounded request heads (`proxy/request_limits.py`) on its HTTP/1 head
reader (`request_heads.py`); chunked trailers on its HTTP/1 body readers (`trailers.py`); 1xx from
a destination on its HTTP/1 client (`informational.py`); plain-text error pages on its error page
functions (`error_pages.py`); the lean runner's master on private attributes, a discouraged call
and one replaced method (`lean_master.py`); and `diff` on its flow format (`flow_file.py`). A
failed check is fatal: the runner refuses to start, naming each internal and the mitmproxy
version (`InternalsChanged`), instead of misbehaving after an upgrade. Under mitmdump and mitmweb
the addon relies on these too, all but the lean master's and the flow format's: `UpstreamTimeouts`
and `RequestLimits` run the checks of their own reaches when they load and log an error, which
stops mitmdump at start-up.

`speed/`: shortcuts that only make the lean runner faster. Its hook path on mitmproxy's
connection handler and addon manager (`fast_hooks.py`), cheaper header look-ups
(`header_lookups.py`), flow ids (`flow_ids.py`) and access lines written in the terminal log's
format (`terminal_lines.py`); each reach names the `Shortcut` it serves. A failed check costs
speed, not the start: the runner logs one warning (the internals, the problems, the mitmproxy
version), leaves those shortcuts out and takes mitmproxy's own path for them; the shortcuts whose
checks pass are installed. mitmdump and mitmweb never install them.

`tests/test_mitmproxy_internals.py` runs every check against the installed mitmproxy. A new reach
goes in one of the two subpackages, with a check in `REACHES` and a test; no other module of the
package imports a private name of mitmproxy.
"""

from __future__ import annotations

import logging
from importlib import metadata

from mitmproxy import master

from .checking import Reach, Shortcut, source_lacks, stock_method
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
    "Shortcut",
    "_check_http_layer",
    "_check_http_stream",
    "answer_overdue_flows",
    "bound_request_heads",
    "configure_all",
    "declared_mitmproxy",
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
    "usable_shortcuts",
]

logger = logging.getLogger(__name__)


def mitmproxy_version() -> str:
    return metadata.version("mitmproxy")


def declared_mitmproxy() -> str:
    """The mitmproxy requirement this package declares (pyproject.toml), as installed."""
    try:
        requirements = metadata.requires("sidecar-dispatcher") or []
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        requirements = []
    for requirement in requirements:
        if requirement.startswith("mitmproxy"):
            return f"{requirement} (pyproject.toml)"
    return "the mitmproxy range in pyproject.toml"


REACHES = (
    # fixes/: a failed check stops the runner
    *lean_master.LEAN_MASTER_REACHES,
    *overdue_checks.OVERDUE_REACHES,
    *request_heads.REQUEST_HEAD_REACHES,
    *flow_file.FLOW_FILE_REACHES,
    *trailers.TRAILER_REACHES,
    *informational.INFORMATIONAL_REACHES,
    *error_pages.ERROR_PAGE_REACHES,
    *stale_retry.STALE_RETRY_REACHES,
    # speed/: a failed check leaves its shortcut out
    *fast_hooks.FAST_HOOK_REACHES,
    *header_lookups.HEADER_LOOKUP_REACHES,
    *flow_ids.FLOW_ID_REACHES,
    *terminal_lines.TERMINAL_LINE_REACHES,
)


def self_check(
    lean: master.Master, *, timeouts_only: bool = False, fixes_only: bool = False
) -> list[str]:
    """One line per internal that this mitmproxy lacks or has changed; [] when all hold.

    `timeouts_only`: those of the upstream timeout, which mitmdump needs too; `fixes_only`:
    those correctness depends on, without which the runner does not start (not the speed
    shortcuts', see usable_shortcuts).
    """
    problems = []
    for reach in REACHES:
        if timeouts_only and not reach.for_timeouts:
            continue
        if fixes_only and reach.shortcut is not None:
            continue
        problem = reach.check(lean)
        if problem is not None:
            problems.append(f"{reach.name}: {problem}")
    return problems


def usable_shortcuts(lean: master.Master) -> frozenset[Shortcut]:
    """The runner's speed shortcuts whose internals all hold in this mitmproxy.

    Those that do not are left out, and one warning names their internals and problems.
    """
    failed: list[str] = []
    left_out: set[Shortcut] = set()
    for reach in REACHES:
        if reach.shortcut is not None and (problem := reach.check(lean)) is not None:
            failed.append(f"  - {reach.shortcut}: {reach.name}: {problem}")
            left_out.add(reach.shortcut)
    if failed:
        logger.warning(
            "mitmproxy %s lacks or has changed internals that speed-only shortcuts of the runner "
            "rely on; the runner takes mitmproxy's own path for them instead (correct, only "
            "slower):\n%s",
            mitmproxy_version(),
            "\n".join(failed),
        )
    return frozenset(Shortcut) - left_out


class InternalsChanged(RuntimeError):
    """The installed mitmproxy lacks internals the runner's correctness relies on."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"mitmproxy {mitmproxy_version()} lacks internals the runner relies on:\n{listed}\n"
            f"Install a mitmproxy release that has them, within {declared_mitmproxy()}. "
            "`mitmdump -s addons/dispatcher.py` needs fewer of them (not the lean master's) but "
            "not none: the upstream timeout, request head limits, trailers, 1xx and error pages "
            "rely on mitmproxy's internals under mitmdump too, and it stops at start-up when one "
            "of those has changed."
        )
