"""The `sidecar-dispatcher` command: run the sidecar, check a config, explain a request.

    sidecar-dispatcher [run] [--workers N|auto] [--set NAME=VALUE ...]
    sidecar-dispatcher validate [PATH]
    sidecar-dispatcher explain [--config PATH] [-v] -H 'environment: dev' [-X METHOD] /path?query
    sidecar-dispatcher diff --flows FILE [--flows FILE ...] --config NEW.yaml [--against OLD.yaml]

`validate` and `explain` import nothing from mitmproxy and send nothing; `explain` runs the same
`resolve` the live addon runs. PATH defaults to $SIDECAR_CONFIG, else config.yaml. `diff` sends
nothing either; it imports mitmproxy's flow file format only when it reads a flow file.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from ..config.load import ConfigError, load_config
from ..core.header_edits import HeaderList
from ..core.recording import RecordingError
from ..core.resolve import AmbiguousRequest, resolve
from ..options import default_config_path
from ..runner.cpu_budget import parse_workers
from ..runner.run_command import run
from .descriptions import (
    describe_answer,
    describe_pick,
    describe_rules,
    labelled,
    not_matched,
    route_extras,
)
from .diff import DiffReport, compare
from .recorded import read_requests


def validate(path: str, out: TextIO) -> int:
    try:
        rules = load_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=out)
        return 1
    print(f"{path}: OK", file=out)
    print(describe_rules(rules), file=out)
    return 0


def explain(arguments: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        rules = load_config(arguments.config)
    except ConfigError as e:
        print(e, file=err)
        return 1
    try:
        headers = HeaderList([parse_header(text) for text in arguments.header])
    except ValueError as e:
        print(f"sidecar-dispatcher explain: {e}", file=err)
        return 2
    path = arguments.path if arguments.path.startswith(("/", "*")) else "/" + arguments.path
    if arguments.verbose:
        for line in not_matched(rules, headers, arguments.method, path):
            print(line, file=out)
    try:
        decision = resolve(
            rules,
            headers,
            client_ip=arguments.client_ip or None,
            path=path,
            keep_host=arguments.keep_host_header,
            method=arguments.method,
            chooser=random.random,  # looked up here, so that tests can fix the draw
        )
    except AmbiguousRequest as e:
        print(f"refused:      400 Bad Request from the sidecar ({e})", file=out)
        print("upstream:     nothing is sent", file=out)
        return 0
    route = next((route for route in rules.routes if route.name == decision.rule), None)
    kind = "route:" if route is not None else "rule:"
    print(labelled(kind, f"{decision.label} ({decision.reason})"), file=out)
    destination = decision.destination
    if destination is None:
        assert decision.answer is not None
        print(labelled("answer:", describe_answer(decision.answer) + " (unmatched)"), file=out)
        print("upstream:     nothing is sent", file=out)
        return 0
    if route is not None and route.split is not None:
        print(labelled("split:", describe_pick(route, decision, headers)), file=out)
    headers.apply(decision.headers)
    print(f"destination:  {destination}", file=out)
    origin = f"{destination.scheme}://{destination.authority}"
    print(f"upstream:     {arguments.method} {origin}{decision.path}", file=out)
    print("headers:", file=out)
    for name, value in headers.fields:
        print(f"  {name}: {value}", file=out)
    if route is not None:
        for line in route_extras(route, decision):
            print(line, file=out)
    return 0


def diff(arguments: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Exit 0: no recorded request would change; 1: some would; 2: bad input."""
    try:
        new = load_config(arguments.config)
        old = load_config(arguments.against) if arguments.against else None
    except ConfigError as e:
        print(e, file=err)
        return 2
    report = DiffReport(show=arguments.show)
    try:
        for path in arguments.flows:
            for request in read_requests(path):
                report.add(compare(request, new, old))
    except RecordingError as e:
        print(f"sidecar-dispatcher diff: {e}", file=err)
        return 2
    if not report.total:
        print("sidecar-dispatcher diff: no HTTP request in the files given", file=err)
        return 2
    print(report.json() if arguments.json else report.text(), file=out)
    return 1 if report.changed else 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar-dispatcher",
        description="Run the sidecar HTTP dispatcher (the default command), check a config, "
        "or explain how it dispatches a request.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "run",
        help="run the sidecar (the default command)",
        description="Serve on $SIDECAR_PORT (5000) with the config at $SIDECAR_CONFIG (else "
        "config.yaml), in a mitmproxy master holding only the addons a reverse proxy needs.",
    )
    add_run_arguments(serve)

    check = commands.add_parser(
        "validate",
        help="check a config file, like nginx -t",
        description="Exit 0 and summarise a good config; print every problem of a bad one "
        "as PATH:LINE:COL: key.path: message and exit 1.",
    )
    check.add_argument(
        "path",
        nargs="?",
        default=default_config_path(),
        metavar="PATH",
        help="config file (default: $SIDECAR_CONFIG, else config.yaml)",
    )

    show = commands.add_parser(
        "explain",
        help="show where a request would go and with which headers, without sending it",
        description="Print the route or rule chosen (or default, or the unmatched answer, and "
        "why), the upstream URL and the complete header set the request would carry after its "
        "edits, then what the route does to the response. Nothing is sent.",
    )
    show.add_argument("path", metavar="PATH[?QUERY]", help="request path, e.g. /api?x=1")
    show.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="a request header as the client sends it (repeatable)",
    )
    show.add_argument("-X", "--method", default="GET", help="request method (default: GET)")
    show.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also say, for each route tried before the one chosen, why it did not match",
    )
    show.add_argument(
        "--config",
        default=default_config_path(),
        metavar="PATH",
        help="config file (default: $SIDECAR_CONFIG, else config.yaml)",
    )
    show.add_argument(
        "--client-ip",
        default="127.0.0.1",
        help="client address appended to X-Forwarded-For (default: 127.0.0.1; '' for none)",
    )
    show.add_argument(
        "--keep-host-header",
        action="store_true",
        help="as with mitmproxy's keep_host_header: keep the client's Host",
    )
    add_diff_parser(commands)
    return parser


def add_diff_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compared = commands.add_parser(
        "diff",
        help="show which recorded requests a new config would send elsewhere",
        description="Resolve every request of the recorded traffic under NEW.yaml and compare "
        "it with its decision under OLD.yaml, or with the decision the sidecar recorded. Print "
        "the changes grouped, with counts and examples (header names only, never values). Exit "
        "0 when nothing would change, 1 when something would, 2 on bad input. Nothing is sent.",
    )
    compared.add_argument(
        "--flows",
        action="append",
        required=True,
        metavar="FILE",
        help="a mitmproxy flow file (mitmdump -w, save_stream_file) or a HAR file (repeatable)",
    )
    compared.add_argument("--config", required=True, metavar="NEW.yaml", help="the new config")
    compared.add_argument(
        "--against",
        metavar="OLD.yaml",
        help="compare with this config's decisions instead of the recorded ones "
        "(required for HAR files, which record no decision)",
    )
    compared.add_argument("--json", action="store_true", help="print one JSON object")
    compared.add_argument(
        "--show",
        type=count,
        default=3,
        metavar="N",
        help="example requests shown per group of changes (default: 3)",
    )


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}")
    return int(text)


def workers_count(text: str) -> int | None:
    """`--workers N` (1 or more), or None for `auto`, resolved when the runner starts."""
    try:
        return parse_workers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a mitmproxy option, e.g. --set stream_large_bodies=1m "
        "or --set dispatcher_config=/app/config/config.yaml (repeatable)",
    )
    parser.add_argument(
        "--workers",
        type=workers_count,
        default=1,
        metavar="N|auto",
        help="processes sharing the listening port (default: 1); auto: one per CPU the "
        "process may use (affinity and cgroup CPU quota)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


COMMANDS = ("run", "validate", "explain", "diff")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")  # `sidecar-dispatcher` alone, or with run's options, runs
    arguments = make_parser().parse_args(argv)
    if arguments.command == "run":
        return run(arguments.options, arguments.workers, arguments.reuse_port)
    if arguments.command == "validate":
        return validate(arguments.path, sys.stdout)
    if arguments.command == "diff":
        return diff(arguments, sys.stdout, sys.stderr)
    return explain(arguments, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())


def parse_header(text: str) -> tuple[str, str]:
    """`'Name: value'` as a (name, value) field, the way curl's -H takes it."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"header {text!r} is not of the form 'Name: value'")
    return name.strip(), value.strip()
