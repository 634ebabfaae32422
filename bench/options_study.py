"""What mitmproxy's options and our log level cost: variants of one peer, measured like the suite.

Every variant runs at once (idle ones cost nothing), and wrk visits them in alternating rounds;
each group's first variant is its baseline, and ratios are of medians from this one run.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from .environment import Bench
from .machine import describe, describe_markdown
from .measure import CLOSE, KEEPALIVE, throughput_rounds
from .peers import Peer
from .processes import Pinning
from .report import markdown_table

logger = logging.getLogger(__name__)

WARNING = {"SIDECAR_LOGGING_LEVEL": "WARNING"}
OPTIMIZE = {"PYTHONOPTIMIZE": "1"}
# mitmproxy's master turns every log record into a deprecated `add_log` event: formatted, sent
# through a self-pipe (`call_soon_threadsafe`) and offered to every addon, though none of
# mitmproxy's addons handles it. The runner uninstalls that handler; these preludes measure it
# both ways. (A runner prelude needs PYTHONOPTIMIZE=1: else the runner re-executes itself with
# -O and the prelude is gone.)
NO_LEGACY_LOG_EVENTS = (
    "import mitmproxy.log\nmitmproxy.log.LegacyLogEvents.install = lambda self: None"
)
KEEP_LEGACY_LOG_EVENTS = (
    "import mitmproxy.log\nmitmproxy.log.LegacyLogEvents.uninstall = lambda self: None"
)


def runner_with(name: str, option: str) -> Peer:
    """The runner with one mitmproxy option set, labelled by it."""
    return Peer(f"runner-{name}", option, "runner", options=(option,))


RUNNER_VARIANTS = (
    Peer("runner", "runner as it is (baseline)", "runner"),
    # mitmproxy checks field types of every Request/Response and every event under `__debug__`
    Peer(
        "runner-no-optimize",
        "SIDECAR_PYTHON_OPTIMIZE=0 (no python -O)",
        "runner",
        env={"SIDECAR_PYTHON_OPTIMIZE": "0"},
    ),
    Peer(
        "runner-add-log",
        "with the deprecated `add_log` events",
        "runner",
        env=OPTIMIZE,
        prelude=KEEP_LEGACY_LOG_EVENTS,
    ),
    Peer("runner-log-warning", "SIDECAR_LOGGING_LEVEL=WARNING", "runner", env=WARNING),
    runner_with("termlog-warn", "termlog_verbosity=warn"),
    runner_with("no-header-check", "validate_inbound_headers=false"),
    runner_with("eager", "connection_strategy=eager"),
    runner_with("no-http2", "http2=false"),
    Peer(
        "runner-all",
        "WARNING + validate_inbound_headers=false + http2=false",
        "runner",
        options=("validate_inbound_headers=false", "http2=false"),
        env=WARNING,
    ),
)
MITMDUMP_VARIANTS = (
    Peer("mitmdump-bare", "mitmdump, no addon (baseline)", "mitmdump"),
    Peer(
        "mitmdump-bare-lazy",
        "no addon, connection_strategy=lazy (as the addon sets it)",
        "mitmdump",
        options=("connection_strategy=lazy",),
    ),
    Peer("mitmdump-bare-quiet", "no addon, flow_detail=0", "mitmdump", options=("flow_detail=0",)),
    Peer("mitmdump-addon", "-s addons/dispatcher.py", "mitmdump", addon=True),
    Peer(
        "mitmdump-addon-warning",
        "addon, SIDECAR_LOGGING_LEVEL=WARNING",
        "mitmdump",
        addon=True,
        env=WARNING,
    ),
    Peer(
        "mitmdump-addon-quiet",
        "addon, flow_detail=0",
        "mitmdump",
        addon=True,
        options=("flow_detail=0",),
    ),
    Peer(
        "mitmdump-addon-silent",
        "addon, flow_detail=0 + WARNING",
        "mitmdump",
        addon=True,
        options=("flow_detail=0",),
        env=WARNING,
    ),
    Peer(
        "mitmdump-addon-no-add-log",
        "addon, without the deprecated `add_log` events",
        "mitmdump",
        addon=True,
        prelude=NO_LEGACY_LOG_EVENTS,
    ),
    Peer(
        "mitmdump-addon-optimized", "addon, PYTHONOPTIMIZE=1", "mitmdump", addon=True, env=OPTIMIZE
    ),
)
GROUPS = {"runner": RUNNER_VARIANTS, "mitmdump": MITMDUMP_VARIANTS}


def run_options_study(quick: bool, pinning: Pinning) -> dict[str, Any]:
    started = time.monotonic()
    rounds, seconds = (1, 1.0) if quick else (3, 6.0)
    variants = [*RUNNER_VARIANTS, *MITMDUMP_VARIANTS]
    with Bench(pinning) as bench:
        running = bench.start(variants)
        results = throughput_rounds(
            bench, running, (KEEPALIVE, CLOSE), rounds=rounds, seconds=seconds, patient=not quick
        )
    return {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": describe(),
        "method": {"rounds": rounds, "seconds": seconds, "pinning": pinning.describe()},
        "groups": {
            group: {
                peer.name: {
                    "label": peer.label,
                    "options": list(peer.options),
                    "env": dict(peer.env),
                    **results[peer.name],
                }
                for peer in peers
            }
            for group, peers in GROUPS.items()
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def markdown(document: dict[str, Any], command: str) -> str:
    method = document["method"]
    sections = []
    for group, variants in document["groups"].items():
        baseline = next(iter(variants.values()))
        rows = []
        for name, found in variants.items():
            keep, close = found["keepalive"], found["close"]
            rows.append(
                [
                    f"`{name}`",
                    found["label"],
                    f"{keep['rate']:,.0f} ({keep['rate_min']:,.0f}–{keep['rate_max']:,.0f})",
                    f"{keep['rate'] / baseline['keepalive']['rate']:.2f}×",
                    f"{close['rate']:,.0f} ({close['rate_min']:,.0f}–{close['rate_max']:,.0f})",
                    f"{close['rate'] / baseline['close']['rate']:.2f}×",
                    str(sum(w["errors"] + w["non_2xx"] for w in (keep, close))),
                ]
            )
        header = [
            "variant",
            "what",
            "keep-alive req/s",
            "×",
            "new connection per request, req/s",
            "×",
            "errors",
        ]
        sections.append(f"## {group}\n\n{markdown_table(header, rows)}")
    body = "\n\n".join(sections)
    return f"""# Option costs ({document["mode"]} mode, {document["generated"]})

Machine: {describe_markdown(document["machine"])}.
Pinning: {method["pinning"]}. wrk, 32 connections, median of {method["rounds"]} alternating rounds
of {method["seconds"]:g} s per variant; × is against the group's first row, from this run.
Reproduce: `{command}` ({document["seconds"]:.0f} s).

{body}
"""
