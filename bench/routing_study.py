"""What routes cost: the seed config before and after routes existed, and 100 routes.

    .venv/bin/python bench/run.py routing [--baseline REF]     # -> results/routing.{json,md}

Each measurement is `bench/hook_cost.py` (the Dispatcher's hooks on synthetic flows, in one
process, python -O, pinned to the proxy's core), run in alternating order several times, and
the medians compared. The baseline is the same measurement with the package as it was at git
REF (a temporary worktree), so that "the seed config must not get slower" compares code, not
moments of a noisy machine.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import options_study
from .machine import describe, describe_markdown
from .peers import REPOSITORY
from .processes import Pinning, pinned
from .report import markdown_table

logger = logging.getLogger(__name__)

# The last commit before routes: the seed config's cost there is the baseline.
DEFAULT_BASELINE = "945e177"
SETTING = "metrics+text-log"  # the image's defaults: what a request really costs in the hooks


def hook_cost(
    config: str, pinning: Pinning, rounds: int, flows: int, source: Path | None = None
) -> float:
    """Microseconds per request of SETTING, with the package from `source` (a checkout)."""
    root = source or REPOSITORY
    argv = [sys.executable, "-O", "-m", "bench.hook_cost", f"--rounds={rounds}", f"--flows={flows}"]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = f"{source / 'addons'}:{source}"
    if config != "seed":
        argv.append(f"--config={config}")
    done = subprocess.run(
        pinned(argv, pinning.proxy),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    costs: dict[str, float] = json.loads(done.stdout)
    return costs[SETTING]


def run_routing_study(
    quick: bool, pinning: Pinning, baseline: str = DEFAULT_BASELINE
) -> dict[str, Any]:
    started = time.monotonic()
    repeats, rounds, flows = (1, 2, 200) if quick else (4, 7, 2000)
    samples: dict[str, list[float]] = {"baseline-seed": [], "seed": [], "routes100": []}
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as folder:
        worktree = Path(folder) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), baseline],
            cwd=REPOSITORY,
            check=True,
            capture_output=True,
            timeout=120,
        )
        try:
            for number in range(repeats):
                order = list(samples) if number % 2 == 0 else list(reversed(samples))
                for name in order:
                    source = worktree if name == "baseline-seed" else None
                    config = "routes100" if name == "routes100" else "seed"
                    cost = hook_cost(config, pinning, rounds, flows, source)
                    logger.info(
                        "round %d/%d %-14s %6.1f µs/request", number + 1, repeats, name, cost
                    )
                    samples[name].append(cost)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)],
                cwd=REPOSITORY,
                check=False,
                capture_output=True,
                timeout=120,
            )
    throughput = options_study.run_options_study(quick, pinning, ("routing",))
    return {
        "groups": throughput["groups"],
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": describe(),
        "method": {
            "repeats": repeats,
            "rounds": rounds,
            "flows": flows,
            "setting": SETTING,
            "baseline": baseline,
            "pinning": pinning.describe(),
        },
        "hook_cost_us": {name: round(statistics.median(v), 2) for name, v in samples.items()},
        "samples_us": samples,
        "seconds": round(time.monotonic() - started, 1),
    }


def markdown(document: dict[str, Any], command: str) -> str:
    costs = document["hook_cost_us"]
    method = document["method"]
    base = costs["baseline-seed"]
    keep = document["groups"]["routing"]["runner-seed"]["keepalive"]
    runner_us = keep["proxy_cores"] / keep["rate"] * 1e6  # the runner's CPU per request, above
    labels = {
        "baseline-seed": f"seed config, before routes (`{method['baseline']}`)",
        "seed": "seed config, now",
        "routes100": "seed config + 100 routes (none matches)",
    }
    rows = []
    for name, label in labels.items():
        added = costs[name] - base
        share = added / runner_us
        rows.append(
            [
                label,
                f"{costs[name]:.1f}",
                f"{added:+.1f}",
                f"{share:+.1%}",
                f"{1 / (1 + share):.2f}×",
            ]
        )
    header = [
        "config",
        "hooks, µs/request",
        "added, µs",
        "÷ runner's CPU per request",
        "runner speed vs before routes",
    ]
    table = markdown_table(header, rows)
    throughput = options_study.group_table(document["groups"]["routing"])
    return f"""# What routes cost ({document["mode"]} mode, {document["generated"]})

Machine: {describe_markdown(document["machine"])}.
Method: `bench/hook_cost.py` with `{method["setting"]}` (the image's defaults), median of
{method["repeats"]} alternating runs × {method["rounds"]} rounds × {method["flows"]} flows;
{method["pinning"]}; the baseline is the package at `{method["baseline"]}` in a git worktree.
What the hooks add is set against the runner's whole CPU time per keep-alive request, measured
below in the same run ({runner_us:.0f} µs = proxy cores ÷ req/s): the runner's speed follows.
Reproduce: `{command}`.

{table}

Throughput through the runner, same run (wrk, 32 connections, alternating rounds; on this
shared machine rounds move by 10–30 %, more than what is measured here):

{throughput}
"""
