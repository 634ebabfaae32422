"""The suite's JSON document as markdown, and the issue's goals checked against it."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .machine import describe_markdown

BASELINE = "mitmdump-addon"  # the ratio column: how each peer compares with stock mitmdump + addon


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    measured: str
    reached: bool | None  # None: not measured in this run, or not testable here
    short: str = ""  # the measurement in a few words, for the docs' summary
    unjudged: str = ""  # why `reached` is None although something was measured

    @property
    def verdict(self) -> str:
        if self.reached is None:
            return self.unjudged or "–"
        return "reached" if self.reached else "**not reached**"


def _rate(results: dict[str, Any], peer: str, workload: str = "keepalive") -> float | None:
    found = results.get(peer, {}).get(workload)
    return float(found["rate"]) if found else None


def paired_ratio(results: dict[str, Any], numerator: str, denominator: str) -> float | None:
    """Median of the per-round ratios: each round's two runs were minutes apart, not more."""
    try:
        tops = results[numerator]["keepalive"]["rounds"]
        bottoms = results[denominator]["keepalive"]["rounds"]
    except (KeyError, TypeError):
        return None
    ratios = [t["rate"] / b["rate"] for t, b in zip(tops, bottoms, strict=False) if b["rate"]]
    return statistics.median(ratios) if ratios else None


def _ratio_goal(
    results: dict[str, Any], name: str, numerator: str, denominator: str, at_least: float
) -> Goal:
    top, bottom = _rate(results, numerator), _rate(results, denominator)
    if top is None or bottom is None or not bottom:
        return Goal(name, f"≥ {at_least:.2f}×", "not measured", None)
    ratio = top / bottom
    paired = paired_ratio(results, numerator, denominator)
    per_round = f"; per-round median {paired:.2f}×" if paired is not None else ""
    return Goal(
        name,
        f"≥ {at_least:.2f}×",
        f"{ratio:.2f}× ({top:,.0f} / {bottom:,.0f} req/s{per_round})",
        ratio >= at_least,
        short=f"{ratio:.2f}×",
    )


# The goals of issue 13 ("Speed, round two").
RUNNER_OVER_ADDON = 3.0
SPIKE_RUNNER_OVER_NGINX = 3.0
SPIKE_WORKERS_OVER_NGINX = 2.0
WORKERS_OVER_ONE = 1.8


def _spike_goal(results: dict[str, Any], peer: str, at_most: float) -> Goal:
    """`peer`'s p95 in the k6 spike against nginx map's in the same run, with no failed check."""
    name = f"k6 spike, `{peer}`: p95 ÷ `nginx-map` p95, zero failed checks"
    target = f"≤ {at_most:g}×, 0 failed"
    spike, nginx = (
        results.get(peer, {}).get("k6_spike"),
        results.get("nginx-map", {}).get("k6_spike"),
    )
    if not spike or not nginx or not nginx["p95_ms"]:
        return Goal(name, target, "not measured", None)
    ratio = spike["p95_ms"] / nginx["p95_ms"]
    checks = spike["failed_checks"] + spike["passed_checks"]
    return Goal(
        name,
        target,
        f"{ratio:.1f}× ({spike['p95_ms']:.1f} / {nginx['p95_ms']:.1f} ms); "
        f"{spike['failed_checks']} of {checks:,} checks failed",
        ratio <= at_most and spike["failed_checks"] == 0 and spike["requests"] > 0,
        short=f"{ratio:.1f}× ({spike['p95_ms']:.0f} / {nginx['p95_ms']:.0f} ms), "
        f"{spike['failed_checks']} failed",
    )


def _accounted(two: dict[str, Any], one: dict[str, Any]) -> float | None:
    """One pair of keep-alive runs: `runner-2`'s req/s scaled to two whole cores from the CPU
    left to it (2 minus what the load side and the rest of the machine used), over `runner-1`'s
    req/s per core it used. The CPU left, not the CPU the workers used: workers that idle (an
    uneven share of connections) are not scaled up."""
    left = max(two["proxy_cores"], 2 - two["load_cores"] - two.get("other_cores", 0))
    if not left or not one["proxy_cores"] or not one["rate"]:
        return None
    return float((two["rate"] * 2 / left) / (one["rate"] / one["proxy_cores"]))


def accounted_scaling(results: dict[str, Any]) -> float | None:
    """2 workers ÷ 1 worker with the load side's CPU accounted for, on a machine where the
    second worker shares its core with the load side: the median over rounds."""
    two = results.get("runner-2", {}).get("keepalive")
    one = results.get("runner-1", {}).get("keepalive")
    if not two or not one:
        return None
    pairs = zip(two.get("rounds", []), one.get("rounds", []), strict=False)
    found = [ratio for t, o in pairs if (ratio := _accounted(t, o)) is not None]
    return statistics.median(found) if found else _accounted(two, one)


def _workers_goal(document: dict[str, Any]) -> Goal:
    results, method = document["results"], document["method"]
    name = "`--workers 2` ÷ 1 worker, load generator on other cores"
    target = f"≥ {WORKERS_OVER_ONE:.2f}×"
    top, bottom = _rate(results, "runner-2"), _rate(results, "runner-1")
    if top is None or bottom is None or not bottom:
        return Goal(name, target, "not measured", None)
    ratio = top / bottom
    paired = paired_ratio(results, "runner-2", "runner-1")
    per_round = f", per-round median {paired:.2f}×" if paired is not None else ""
    measured = f"{ratio:.2f}× ({top:,.0f} / {bottom:,.0f} req/s{per_round})"
    if not method.get("workers_share_load", True):
        return Goal(
            name,
            target,
            f"{measured}; workers on cores apart from the load side",
            ratio >= WORKERS_OVER_ONE,
            short=f"{ratio:.2f}×",
        )
    # Two cores: no arrangement keeps the load side off the workers' cores. Say what was
    # measured, and the estimate with the load side's CPU accounted for; judge neither.
    load = results["runner-2"]["keepalive"]["load_cores"]
    estimate = accounted_scaling(results)
    accounted = (
        f"; with the CPU the load side and the rest of the machine took accounted for "
        f"(runner-2's req/s scaled to 2 whole cores): {estimate:.2f}×"
        if estimate is not None
        else ""
    )
    return Goal(
        name,
        target,
        f"{measured} with worker 2 sharing core 1 with wrk and the upstream ({load:.2f} core)"
        f"{accounted}. Not testable on {document['machine']['cores']} cores: needs ≥ 3",
        None,
        short=f"{ratio:.2f}× as measured"
        + (f", {estimate:.2f}× with the load side's CPU accounted for" if estimate else ""),
        unjudged=f"not testable on {document['machine']['cores']} cores (needs ≥ 3)",
    )


def goals(document: dict[str, Any]) -> list[Goal]:
    """Issue 13's goals, measured in this run."""
    results: dict[str, Any] = document["results"]
    runner = _ratio_goal(
        results,
        "runner ÷ `mitmdump -s addons/dispatcher.py`",
        "runner-1",
        "mitmdump-addon",
        RUNNER_OVER_ADDON,
    )
    runner = dataclasses.replace(runner, name=f"{runner.name}, both at INFO")
    return [
        runner,
        _spike_goal(results, "runner-1", SPIKE_RUNNER_OVER_NGINX),
        _spike_goal(results, "runner-2", SPIKE_WORKERS_OVER_NGINX),
        _workers_goal(document),
    ]


def standing_goals(document: dict[str, Any]) -> list[Goal]:
    """Goals of earlier rounds that still hold: the addon's own cost, the ramped k6 profile
    without a failed check, and no memory growth."""
    results: dict[str, Any] = document["results"]
    found = [
        _ratio_goal(
            results, "mitmdump + addon ÷ bare mitmdump", "mitmdump-addon", "mitmdump-bare", 0.95
        ),
    ]
    for peer in ("runner-1", "runner-2", "mitmdump-addon"):
        k6 = results.get(peer, {}).get("k6")
        if k6:
            nginx = results.get("nginx-map", {}).get("k6") or {}
            beside = f", nginx-map p95 {nginx['p95_ms']:.1f} ms" if nginx else ""
            found.append(
                Goal(
                    f"k6 ramped profile through {peer}: zero failed checks",
                    "0",
                    f"{k6['failed_checks']} of {k6['failed_checks'] + k6['passed_checks']}; "
                    f"p95 {k6['p95_ms']:.1f} ms{beside}",
                    k6["failed_checks"] == 0 and k6["requests"] > 0,
                )
            )
    for peer in ("runner-1", "runner-2", "mitmdump-addon"):
        memory = results.get(peer, {}).get("memory")
        if memory:
            detail = ""
            if "second_half_growth_mib" in memory:
                detail = (
                    f" (largest process {memory['largest_process_growth_mib']:+.2f}, "
                    f"second half {memory['second_half_growth_mib']:+.2f})"
                )
            found.append(
                Goal(
                    f"RSS growth of {peer} over {memory['requests']:,} requests",
                    "< 5 MiB",
                    f"{memory['growth_mib']:+.2f} MiB{detail}",
                    memory["growth_mib"] < 5.0,
                )
            )
    return found


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _or_dash(value: Any, fmt: Callable[[Any], str]) -> str:
    return "–" if value is None else fmt(value)


def throughput_table(document: dict[str, Any]) -> str:
    results, peers = document["results"], document["peers"]
    base = _rate(results, BASELINE)
    rows = []
    for name, peer in peers.items():
        found = results[name]
        keep, close, large = (found.get(w) for w in ("keepalive", "close", "body100k"))
        errors = sum(w["errors"] + w["non_2xx"] for w in (keep, close, large) if w)
        ratio = f"{keep['rate'] / base:.2f}×" if keep and base else "–"
        rows.append(
            [
                f"`{name}` {peer['label']}",
                peer["cores"],
                _or_dash(
                    keep, lambda w: f"{w['rate']:,.0f} ({w['rate_min']:,.0f}–{w['rate_max']:,.0f})"
                ),
                ratio,
                _or_dash(keep, lambda w: f"{w['latency_p50_ms']:.1f} / {w['latency_p99_ms']:.1f}"),
                _or_dash(close, lambda w: f"{w['rate']:,.0f}"),
                _or_dash(large, lambda w: f"{w['rate']:,.0f} ({w['mb_per_s']:,.0f} MB/s)"),
                str(errors),
                _or_dash(
                    keep,
                    lambda w: (
                        f"{w['proxy_cores']:.2f} / {w['load_cores']:.2f} / "
                        f"{w.get('other_cores', 0):.2f}"
                    ),
                ),
                peer["note"],
            ]
        )
    header = [
        "peer",
        "proxy cores",
        "keep-alive req/s (min–max)",
        f"× `{BASELINE}`",
        "keep-alive p50 / p99 ms",
        "new connection per request, req/s",
        "100 KB response, req/s",
        "errors",
        "keep-alive CPU: proxy / load side / rest of the machine (cores)",
        "note",
    ]
    return markdown_table(header, rows)


def _peer_table(
    document: dict[str, Any], header: list[str], cells: Callable[[dict[str, Any]], list[str] | None]
) -> str:
    """A row for each peer that `cells` has something to say about: its name, then those cells."""
    rows = [
        [f"`{name}`", *row]
        for name, found in document["results"].items()
        if (row := cells(found)) is not None
    ]
    return markdown_table(["peer", *header], rows)


def _times_nginx(document: dict[str, Any], k6: dict[str, Any], key: str) -> str:
    """A k6 p95 as a multiple of nginx map's in the same form and run."""
    nginx = document["results"].get("nginx-map", {}).get(key)
    return f"{k6['p95_ms'] / nginx['p95_ms']:.1f}×" if nginx and nginx["p95_ms"] else "–"


def k6_table(document: dict[str, Any], key: str = "k6") -> str:
    """One form of the k6 profile: `k6` (ramped) or `k6_spike`, each peer a row."""
    latencies = ("p50", "p90", "p95", "max")
    spike = key == "k6_spike"

    def cells(found: dict[str, Any]) -> list[str] | None:
        if not (k6 := found.get(key)):
            return None
        burst = [_or_dash(k6.get(f"burst_{n}_ms"), "{:.1f}".format) for n in ("p95", "max")]
        return [
            f"{k6['requests']:,}",
            *(f"{k6[f'{latency}_ms']:.1f}" for latency in latencies),
            _times_nginx(document, k6, key),
            *(burst if spike else []),
            f"{k6['failed_checks']} / {k6['failed_checks'] + k6['passed_checks']:,}",
            str(k6["failed_requests"]),
        ]

    header = ["requests", *(f"{latency} ms" for latency in latencies), "p95 × `nginx-map`"]
    if spike:
        header += ["first second: p95 ms", "first second: max ms"]
    return _peer_table(document, [*header, "failed checks", "failed requests"], cells)


def summary_table(document: dict[str, Any]) -> str:
    """The few numbers the README shows: throughput and both k6 forms, each peer a row."""
    results, peers = document["results"], document["peers"]
    base = _rate(results, BASELINE)
    rows = []
    for name, peer in peers.items():
        found = results[name]
        keep, ramped, spike = found.get("keepalive"), found.get("k6"), found.get("k6_spike")
        failed = [k6["failed_checks"] for k6 in (ramped, spike) if k6]
        label = f"`{name}`: {peer['label']}"
        rows.append(
            [
                f"**{label}**" if name == "runner-1" else label,
                _or_dash(keep, lambda w: f"{w['rate']:,.0f}"),
                f"{keep['rate'] / base:.2f}×" if keep and base else "–",
                _or_dash(ramped, lambda k: f"{k['p95_ms']:.1f}"),
                _or_dash(
                    spike, lambda k: f"{k['p95_ms']:.1f} ({_times_nginx(document, k, 'k6_spike')})"
                ),
                str(sum(failed)) if failed else "–",
            ]
        )
    header = [
        "peer",
        "keep-alive req/s (32 conns)",
        f"× `{BASELINE}`",
        "k6 ramped p95 ms",
        "k6 spike p95 ms (× nginx)",
        "k6 failed checks",
    ]
    return markdown_table(header, rows)


def memory_table(document: dict[str, Any]) -> str:
    def cells(found: dict[str, Any]) -> list[str] | None:
        memory = found.get("memory")
        if found.get("rss_idle_mib") is None and not memory:
            return None
        return [
            _or_dash(found.get("rss_idle_mib"), lambda v: f"{v:.1f}"),
            _or_dash(memory, lambda m: str(m["processes"])),
            _or_dash(memory, lambda m: f"{m['rss_warm_mib']:.1f}"),
            _or_dash(memory, lambda m: f"{m['rss_after_mib']:.1f} ({m['requests']:,} requests)"),
            _or_dash(memory, lambda m: f"{m['growth_mib']:+.2f}"),
            _or_dash(memory and memory.get("largest_process_growth_mib"), "{:+.2f}".format),
            _or_dash(memory and memory.get("second_half_growth_mib"), "{:+.2f}".format),
        ]

    header = [
        "RSS idle MiB",
        "processes",
        "RSS after warm-up MiB",
        "RSS after the run MiB",
        "growth MiB",
        "of which the largest one process",
        "growth in the second half",
    ]
    return _peer_table(document, header, cells)


def goals_table(found: list[Goal], *, short: bool = False) -> str:
    rows = [
        [g.name, g.target, (g.short or g.measured) if short else g.measured, g.verdict]
        for g in found
    ]
    return markdown_table(["goal", "target", "measured", ""], rows)


def pinning_text(document: dict[str, Any]) -> str:
    method = document["method"]
    if method.get("workers_share_load", True):
        return (
            f"Pinning: {method['pinning']}. With two cores nothing keeps the load side off the"
            " second worker's core: `runner-2` against `runner-1` is measured as it is, and"
            " estimated with the load side's CPU accounted for (see the goals)."
        )
    return f"Pinning: {method['pinning']}."


def skipped_text(document: dict[str, Any]) -> str:
    skipped = document.get("skipped") or {}
    return "".join(f"\n**Left out:** `{name}`: {why}." for name, why in skipped.items())


def k6_section(document: dict[str, Any]) -> str:
    method = document["method"]
    text = f"""## The original project's k6 profile, ramped ({method["k6_vus"]} VUs)

Each user sends `GET /` with `environment: qa` and a cookie, then sleeps 1 s.
{method["k6_rounds"]} alternating rounds; users start over {method["k6_ramp"]:g} s, latencies are
those of the {method["k6_hold"]:g} s at full load (median over rounds; max: the largest), checks
count over the whole run.

{k6_table(document)}
"""
    if "k6_spike_vus" in method:
        text += f"""
## The original project's k6 profile, spike ({method["k6_spike_vus"]} VUs at once)

The same users, all started together: {method["k6_spike_vus"]} connections opened in the same
moment, then each user's request every second, for {method["k6_spike_seconds"]:g} s.
{method["k6_rounds"]} alternating rounds; latencies over the whole run (median over rounds; max:
the largest), and those of the first second (the burst) alone.

{k6_table(document, "k6_spike")}
"""
    return text


def markdown(document: dict[str, Any], command: str) -> str:
    method = document["method"]
    quiet = (
        " Each run first waits (up to 20 s) for the rest of the machine to be idle, and a run"
        " during which other processes kept more than 0.25 core busy is measured once more"
        " (the quieter run is kept); the CPU column shows what the rest of the machine used."
        if method.get("patient")
        else " Quick mode: single short runs, for a smoke test; do not compare its numbers."
    )
    return f"""# Benchmark ({document["mode"]} mode, {document["generated"]})

Machine: {describe_markdown(document["machine"])}.
{pinning_text(document)}{quiet}
Reproduce: `{command}` ({document["seconds"]:.0f} s).{skipped_text(document)}

## Summary

{summary_table(document)}

## Throughput (wrk, median of {method["rounds"]} alternating rounds of {method["seconds"]:g} s)

{throughput_table(document)}

{k6_section(document)}
## Memory

RSS summed over every process of the peer (`runner-2`: the supervisor and its two workers;
nginx: master and worker). Idle: right after start. Growth: from after a
{method["memory_warmup"]:,}-request warm-up of a fresh process to the end of the run.

{memory_table(document)}

## Goals (issue 13)

{goals_table(goals(document))}

## Goals of earlier rounds, still checked

{goals_table(standing_goals(document))}
"""


DOCS_START = "<!-- bench:summary:start (bench/run.py render --docs writes this part) -->"
DOCS_END = "<!-- bench:summary:end -->"


def docs_block(document: dict[str, Any], results_link: str) -> str:
    """The summary as the README and docs/performance.md show it, between their markers."""
    machine, method = document["machine"], document["method"]
    python = machine.get("python_build") or f"Python {machine['python']}"
    docker = "" if "with PGO" in python else "; the Docker image's CPython has PGO and LTO"
    date, minutes = document["generated"][:10], document["seconds"] / 60
    pinning = method["pinning"][:1].upper() + method["pinning"][1:]
    spike_vus = method.get("k6_spike_vus", method["k6_vus"])
    return f"""{DOCS_START}
Measured on {date} by `bench/run.py` ({document["mode"]} mode, {minutes:.0f} min), every peer in
the same run, on {machine["cpu"]}, {machine["cores"]} cores, Linux {machine["kernel"]};
{python}{docker}; mitmproxy {machine["mitmproxy"]}. {pinning}.
req/s: median of {method["rounds"]} alternating wrk rounds of {method["seconds"]:g} s; k6 p95:
median of {method["k6_rounds"]} rounds of each form ({method["k6_vus"]} VUs ramped in over
{method["k6_ramp"]:g} s; {spike_vus} VUs started together). Every table:
[`bench/results/latest.md`]({results_link}).{skipped_text(document)}

{summary_table(document)}

{goals_table(goals(document), short=True)}
{DOCS_END}"""


def replace_docs_block(text: str, block: str) -> str:
    """`text` with its marked summary replaced by `block`; ValueError without the markers."""
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start < 0 or end < start:
        raise ValueError(f"no {DOCS_START!r} ... {DOCS_END!r} section")
    return text[:start] + block + text[end + len(DOCS_END) :]
