"""The command line behind bench/run.py: choose a study, run it, write JSON and markdown."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from . import diff_study, options_study, profiling, report, routing_study, suite
from .processes import choose_pinning

logger = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results"
REPOSITORY = RESULTS.parents[1]


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark the sidecar against its peers on loopback (see bench/README.md).",
    )
    parser.add_argument(
        "study",
        nargs="?",
        default="suite",
        choices=("suite", "options", "observability", "routing", "profile", "diff", "render"),
        help="suite: the peers table (default); options: runner option costs; observability: "
        "what metrics and the access log cost; routing: what routes cost; profile: py-spy; "
        "diff: time and memory of `sidecar-dispatcher diff` over 10k and 100k flows; "
        "render: write a results JSON file's markdown again, measuring nothing",
    )
    parser.add_argument("json", nargs="?", type=Path, help="for render: the results JSON file")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (for CI)")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder for JSON and markdown"
    )
    parser.add_argument("--name", help="file name stem (default: latest, quick, options, profile)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every process started")
    parser.add_argument(
        "--rounds", type=int, help="suite: alternating wrk rounds (default: 3, quick: 1)"
    )
    parser.add_argument(
        "--k6-rounds", type=int, help="suite: rounds of each k6 form (default: 2, quick: 1)"
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="render: also rewrite the performance summary in README.md and docs/performance.md",
    )
    return parser.parse_args(arguments)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every process started is stopped on the way out."""

    def raise_interrupt(_number: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def main(arguments: Sequence[str]) -> int:
    options = parse(arguments)
    logging.basicConfig(
        level=logging.DEBUG if options.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    stop_on_sigterm()
    if options.study == "render":
        return render(options.json, docs=options.docs)
    study, stem = choose(options)
    if options.rounds is not None or options.k6_rounds is not None:
        given = [n for n in (options.rounds, options.k6_rounds) if n is not None]
        if options.study != "suite" or min(given) < 1:
            logger.error("--rounds and --k6-rounds are the suite's, and at least 1")
            return 2
        study = suite_with_rounds(options.rounds, options.k6_rounds)
    command = shlex.join([".venv/bin/python", "bench/run.py", *arguments])
    try:
        document, text = study(options.quick, command)
    except KeyboardInterrupt:
        logger.error("interrupted: every process started was stopped")
        return 130
    document["command"] = command
    options.results.mkdir(parents=True, exist_ok=True)
    json_path = options.results / f"{options.name or stem}.json"
    markdown_path = options.results / f"{options.name or stem}.md"
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    markdown_path.write_text(text)
    print(text)
    logger.info("wrote %s and %s", json_path, markdown_path)
    return 0


# Where `render --docs` writes the suite's summary, and how each links to the results.
DOCS = {
    REPOSITORY / "README.md": "bench/results/latest.md",
    REPOSITORY / "docs" / "performance.md": "../bench/results/latest.md",
}


def render(path: Path | None, *, docs: bool = False) -> int:
    """The markdown of an earlier run, from its JSON file (after a change to the report)."""
    if path is None:
        logger.error("render needs a results JSON file, e.g. bench/results/latest.json")
        return 2
    document = json.loads(path.read_text())
    if docs:
        if "results" not in document or "groups" in document or "profiles" in document:
            logger.error("--docs needs the suite's results, e.g. bench/results/latest.json")
            return 2
        for page, link in DOCS.items():
            try:
                text = report.replace_docs_block(
                    page.read_text(), report.docs_block(document, link)
                )
            except ValueError as e:
                logger.error("%s: %s", page, e)
                return 1
            page.write_text(text)
            logger.info("rewrote the performance summary in %s", page)
    command = document.get("command") or default_command(document)
    if "diff_runs" in document:
        text = diff_study.markdown(document, command)
    elif "samples_us" in document:
        text = routing_study.markdown(document, command)
    elif "groups" in document:
        text = options_study.markdown(document, command)
    elif "profiles" in document:
        text = profiling.markdown(document, command)
    else:
        text = report.markdown(document, command)
    path.with_suffix(".md").write_text(text)
    print(text)
    return 0


def default_command(document: dict[str, Any]) -> str:
    """For documents written before the command was recorded."""
    words = [".venv/bin/python", "bench/run.py"]
    if "groups" in document:
        words.append("options")
    elif "profiles" in document:
        words.append("profile")
    if document.get("mode") == "quick":
        words.append("--quick")
    return " ".join(words)


Study = Callable[[bool, str], tuple[dict[str, Any], str]]


def choose(options: argparse.Namespace) -> tuple[Study, str]:
    if options.study == "options":
        return run_options, "options-quick" if options.quick else "options"
    if options.study == "routing":
        return run_routing, "routing-quick" if options.quick else "routing"
    if options.study == "observability":
        return run_observability, "observability-quick" if options.quick else "observability"
    if options.study == "profile":
        return run_profile, "profile-quick" if options.quick else "profile"
    if options.study == "diff":
        return run_diff, "diff-quick" if options.quick else "diff"
    return run_suite, "quick" if options.quick else "latest"


def run_suite(quick: bool, command: str) -> tuple[dict[str, Any], str]:
    document = suite.run_suite(suite.QUICK if quick else suite.FULL, choose_pinning())
    return document, report.markdown(document, command)


def suite_with_rounds(rounds: int | None, k6_rounds: int | None) -> Study:
    """The suite with fewer (or more) rounds than its plan, e.g. on a busy machine; the report
    gives the rounds it ran."""

    def run(quick: bool, command: str) -> tuple[dict[str, Any], str]:
        plan = suite.QUICK if quick else suite.FULL
        plan = dataclasses.replace(
            plan, rounds=rounds or plan.rounds, k6_rounds=k6_rounds or plan.k6_rounds
        )
        document = suite.run_suite(plan, choose_pinning())
        return document, report.markdown(document, command)

    return run


def run_options(quick: bool, command: str) -> tuple[dict[str, Any], str]:
    document = options_study.run_options_study(quick, choose_pinning())
    return document, options_study.markdown(document, command)


def run_observability(quick: bool, command: str) -> tuple[dict[str, Any], str]:
    groups = ("observability",)
    document = options_study.run_options_study(quick, choose_pinning(), groups)
    return document, options_study.markdown(document, command)


def run_routing(quick: bool, command: str) -> tuple[dict[str, Any], str]:
    document = routing_study.run_routing_study(quick, choose_pinning())
    return document, routing_study.markdown(document, command)


def run_diff(quick: bool, command: str) -> tuple[dict[str, Any], str]:
    document = diff_study.run_diff_study(quick, choose_pinning())
    return document, diff_study.markdown(document, command)


def run_profile(quick: bool, command: str) -> tuple[dict[str, Any], str]:
    document = profiling.run_profiles(quick, choose_pinning())
    return document, profiling.markdown(document, command)
