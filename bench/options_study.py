"""What mitmproxy's options and our log level cost: variants of one peer, measured like the suite.

Every variant runs at once (idle ones cost nothing), and wrk visits them in alternating rounds;
each group's first variant is its baseline, and ratios are of medians from this one run.
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
import time
from typing import Any

from sidecar_dispatcher.testing.configs import many_routes

from .environment import Bench
from .machine import describe, describe_markdown
from .measure import CLOSE, KEEPALIVE, throughput_rounds
from .peers import REPOSITORY, Peer
from .processes import Pinning, pinned
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

# The runner's shortcuts through mitmproxy beyond its hook path (_mitmproxy:
# header_lookups, flow_ids, terminal_lines, fast_hooks' joined writes), all switched off.
WITHOUT_SHORTCUTS = """\
import sidecar_dispatcher._mitmproxy as internals
from sidecar_dispatcher._mitmproxy import fast_hooks
internals.faster_header_lookups = internals.pooled_ids = lambda: None
internals.direct_terminal_lines = lambda *arguments: None
def write_each(self, writer, data):
    if not writer.is_closing():
        writer.write(data)
fast_hooks._Writes.add = write_each"""


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
    Peer(
        "runner-no-shortcuts",
        "without header look-ups, pooled ids, direct access lines and joined writes",
        "runner",
        env=OPTIMIZE,
        prelude=WITHOUT_SHORTCUTS,
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
# What the admin listener's metrics and the access log cost the runner. Port 0: each variant's
# admin listener on a free port of its own (they all run at once).
UNOBSERVED = {"SIDECAR_ADMIN": "", "SIDECAR_ACCESS_LOG": "off"}
OBSERVABILITY_VARIANTS = (
    Peer(
        "runner-unobserved",
        "no admin listener, access log off (baseline)",
        "runner",
        env=UNOBSERVED,
    ),
    Peer(
        "runner-metrics",
        "metrics (admin listener on), access log off",
        "runner",
        env={**UNOBSERVED, "SIDECAR_ADMIN": "127.0.0.1:0"},
    ),
    Peer(
        "runner-text-log",
        "text access log, no admin listener",
        "runner",
        env={**UNOBSERVED, "SIDECAR_ACCESS_LOG": "text"},
    ),
    Peer(
        "runner-observed",
        "metrics + text access log (the image's defaults)",
        "runner",
        env={"SIDECAR_ADMIN": "127.0.0.1:0", "SIDECAR_ACCESS_LOG": "text"},
    ),
    Peer(
        "runner-observed-json",
        "metrics + json access log",
        "runner",
        env={"SIDECAR_ADMIN": "127.0.0.1:0", "SIDECAR_ACCESS_LOG": "json"},
    ),
)
# What the routes cost the runner: the seed config, and the same with 100 routes tried first.
ROUTING_VARIANTS = (
    Peer("runner-seed", "the seed config (baseline)", "runner"),
    Peer(
        "runner-routes100",
        "seed config + 100 routes of mixed matchers, none matching",
        "runner",
        extra_config=many_routes(100),
    ),
)
GROUPS = {
    "runner": RUNNER_VARIANTS,
    "mitmdump": MITMDUMP_VARIANTS,
    "observability": OBSERVABILITY_VARIANTS,
    "routing": ROUTING_VARIANTS,
}
OPTION_GROUPS = ("runner", "mitmdump")  # `bench/run.py options`; `observability` runs on its own


def run_options_study(
    quick: bool, pinning: Pinning, groups: tuple[str, ...] = OPTION_GROUPS
) -> dict[str, Any]:
    started = time.monotonic()
    rounds, seconds = (1, 1.0) if quick else (3, 6.0)
    variants = [peer for group in groups for peer in GROUPS[group]]
    with Bench(pinning) as bench:
        running = bench.start(variants)
        results = throughput_rounds(
            bench, running, (KEEPALIVE, CLOSE), rounds=rounds, seconds=seconds, patient=not quick
        )
    document: dict[str, Any] = {}
    if "observability" in groups:
        document["hook_cost_us"] = hook_costs(quick, pinning)
    return document | {
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
            if group in groups
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def hook_costs(quick: bool, pinning: Pinning) -> dict[str, float]:
    """bench/hook_cost.py under python -O (as the runner runs), on the proxy's core."""
    rounds, flows = (3, 300) if quick else (15, 2000)
    argv = [sys.executable, "-O", "-m", "bench.hook_cost", f"--rounds={rounds}", f"--flows={flows}"]
    command = pinned(argv, pinning.proxy)
    done = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600, check=True
    )
    costs: dict[str, float] = json.loads(done.stdout)
    return costs


def hook_cost_section(document: dict[str, Any]) -> str:
    """The observers' cost per request, against the runner's own CPU time per request."""
    costs = document.get("hook_cost_us")
    baseline = document["groups"].get("observability", {}).get("runner-unobserved")
    if not costs or not baseline:
        return ""
    keep = baseline["keepalive"]
    runner_us = keep["proxy_cores"] / keep["rate"] * 1e6  # CPU time per request, measured above
    rows = [
        [
            f"`{name}`",
            f"{value:.1f}",
            f"{value - costs['off']:+.1f}",
            f"{(value - costs['off']) / runner_us:.1%}",
        ]
        for name, value in costs.items()
    ]
    table = markdown_table(
        ["setting", "hooks, µs/request", "added, µs", "added ÷ runner's CPU per request"], rows
    )
    return f"""
## What the hooks cost, in one process

Throughput above moves by 10-30 % between rounds on this machine, more than an observer costs.
`bench/hook_cost.py` runs the same `Dispatcher` on synthetic flows (`requestheaders` then
`response`) under each setting in alternating rounds (median of the rounds, python -O, pinned
to the proxy's core), and sets what each adds against the baseline runner's CPU time per
keep-alive request measured above ({runner_us:.0f} µs = proxy cores ÷ req/s).

{table}
"""


def group_table(variants: dict[str, Any]) -> str:
    """One group's variants: throughput both ways, against the group's first row."""
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
    return markdown_table(header, rows)


def markdown(document: dict[str, Any], command: str) -> str:
    method = document["method"]
    sections = [
        f"## {group}\n\n{group_table(variants)}" for group, variants in document["groups"].items()
    ]
    body = "\n\n".join(sections)
    return f"""# Option costs ({document["mode"]} mode, {document["generated"]})

Machine: {describe_markdown(document["machine"])}.
Pinning: {method["pinning"]}. wrk, 32 connections, median of {method["rounds"]} alternating rounds
of {method["seconds"]:g} s per variant; × is against the group's first row, from this run.
Reproduce: `{command}` ({document["seconds"]:.0f} s).

{body}
{hook_cost_section(document)}"""
