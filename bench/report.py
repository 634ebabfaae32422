"""The suite's JSON document as markdown, and the issue's goals checked against it."""

from __future__ import annotations

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
    reached: bool | None  # None: not measured in this run


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
    )


def goals(document: dict[str, Any]) -> list[Goal]:
    results: dict[str, Any] = document["results"]
    found = [
        _ratio_goal(results, "runner ÷ mitmdump + addon", "runner-1", "mitmdump-addon", 2.0),
        _ratio_goal(
            results,
            "runner ÷ mitmdump map_remote+modify_headers",
            "runner-1",
            "mitmdump-map-remote",
            3.0,
        ),
        _ratio_goal(
            results, "mitmdump + addon ÷ bare mitmdump", "mitmdump-addon", "mitmdump-bare", 0.95
        ),
        _ratio_goal(results, "runner 2 workers ÷ 1 worker", "runner-2", "runner-1", 1.7),
    ]
    for peer in ("runner-1", "runner-2", "mitmdump-addon"):
        k6 = results.get(peer, {}).get("k6")
        if k6:
            nginx = results.get("nginx-map", {}).get("k6") or {}
            beside = f", nginx-map p95 {nginx['p95_ms']:.1f} ms" if nginx else ""
            found.append(
                Goal(
                    f"k6 profile through {peer}: zero failed checks",
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


def k6_table(document: dict[str, Any]) -> str:
    latencies = ("p50", "p90", "p95", "max")

    def cells(found: dict[str, Any]) -> list[str] | None:
        if not (k6 := found.get("k6")):
            return None
        return [
            f"{k6['requests']:,}",
            *(f"{k6[f'{latency}_ms']:.1f}" for latency in latencies),
            f"{k6['failed_checks']} / {k6['failed_checks'] + k6['passed_checks']:,}",
            str(k6["failed_requests"]),
        ]

    header = ["requests", *(f"{latency} ms" for latency in latencies)]
    return _peer_table(document, [*header, "failed checks", "failed requests"], cells)


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


def goals_table(document: dict[str, Any]) -> str:
    rows = [
        [
            g.name,
            g.target,
            g.measured,
            {True: "reached", False: "**not reached**", None: "–"}[g.reached],
        ]
        for g in goals(document)
    ]
    return markdown_table(["goal", "target", "measured", ""], rows)


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
Pinning: {method["pinning"]}. `runner-2` spreads its two workers over both cores and so shares
core 1 with wrk and the upstream.{quiet}
Reproduce: `{command}` ({document["seconds"]:.0f} s).

## Throughput (wrk, median of {method["rounds"]} alternating rounds of {method["seconds"]:g} s)

{throughput_table(document)}

## The original project's k6 profile ({method["k6_vus"]} VUs)

Each user sends `GET /` with `environment: qa` and a cookie, then sleeps 1 s.
{method["k6_rounds"]} alternating rounds; users start over {method["k6_ramp"]:g} s, latencies are
those of the {method["k6_hold"]:g} s at full load (median over rounds; max: the largest), checks
count over the whole run.

{k6_table(document)}

## Memory

RSS summed over every process of the peer (`runner-2`: the supervisor and its two workers;
nginx: master and worker). Idle: right after start. Growth: from after a
{method["memory_warmup"]:,}-request warm-up of a fresh process to the end of the run.

{memory_table(document)}

## Goals

{goals_table(document)}
"""
