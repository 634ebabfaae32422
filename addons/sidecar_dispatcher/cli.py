"""The `sidecar-dispatcher` command: run the sidecar, check a config, explain a request.

    sidecar-dispatcher [run] [--workers N] [--set NAME=VALUE ...]
    sidecar-dispatcher validate [PATH]
    sidecar-dispatcher explain [--config PATH] [-v] -H 'environment: dev' [-X METHOD] /path?query

`validate` and `explain` import nothing from mitmproxy and send nothing; `explain` runs the same
`resolve` the live addon runs. PATH defaults to $SIDECAR_CONFIG, else config.yaml.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from . import __version__
from .config import ConfigError, default_config_path, load_config
from .header_list import HeaderList, parse_header
from .routes import HeaderAppend, HeaderEdit, HeaderRemoval, Match, RequestView, Route, Unmatched
from .routing import AmbiguousRequest, Decision, resolve
from .rules import RuleSet
from .supervisor import run

EVERY_REQUEST = "every request"
LABEL = 14  # the width of the labels of validate's routes and of explain's lines


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


def describe_rules(rule_set: RuleSet) -> str:
    default = rule_set.default if rule_set.default is not None else "none (see unmatched)"
    lines = [f"  key:         {rule_set.key}", f"  default:     {default}"]
    if rule_set.routes:
        lines.append(f"  routes:      {len(rule_set.routes)}, tried in order before the rules")
        for index, route in enumerate(rule_set.routes, 1):
            lines.append(f"    {index}. {route.name}")
            lines.extend(f"       {line}" for line in describe_route(route, rule_set))
            if describe_match(route.match) == EVERY_REQUEST and (
                index < rule_set.rule_count or rule_set.unmatched is not None
            ):
                lines.append(f"       {labelled('', 'so nothing after this route is used')}")
    lines.append(f"  rules:       {len(rule_set.rewrites)}")
    width = max((len(name) for name in rule_set.rewrites), default=0)
    for name, rule in rule_set.rewrites.items():
        destination = rule.destination or f"{rule_set.default} (default)"
        patched = ", ".join(patch.name for patch in rule.patches) or "none"
        lines.append(f"    {name:<{width}}  → {destination}  patches: {patched}")
    if rule_set.unmatched is not None:
        lines.append(f"  unmatched:   {describe_answer(rule_set.unmatched)}")
    return "\n".join(lines)


def describe_route(route: Route, rule_set: RuleSet) -> list[str]:
    """A route's lines in `validate`'s summary: header names only, as for rules (values may be
    secrets); `explain` shows the values."""
    lines = [labelled("match:", describe_match(route.match))]
    if route.split is not None:
        split = route.split
        width = max(len(str(member.weight)) for member in split.members)
        for number, member in enumerate(split.members):
            label = "split:" if number == 0 else ""
            weight = f"weight {member.weight:<{width}}"
            lines.append(labelled(label, f"{weight}  → {member.destination}"))
        how = f"sticky on {split.sticky}" if split.sticky else "random by weight"
        lines.append(labelled("", how))
    else:
        destination = route.destination or f"{rule_set.default} (default)"
        lines.append(labelled("destination:", str(destination)))
    if route.rewrite_prefix is not None and route.match.path is not None:
        lines.append(labelled("path:", f"{route.match.path.value} → {route.rewrite_prefix}"))
    if route.request_headers:
        lines.append(labelled("request:", describe_edits(route.request_headers, values=False)))
    if route.response_headers:
        lines.append(labelled("response:", describe_edits(route.response_headers, values=False)))
    if route.timeout is not None:
        lines.append(labelled("timeout:", f"{route.timeout:g} s"))
    if route.mirror is not None:
        mirror = route.mirror
        lines.append(labelled("mirror:", f"{mirror.destination} ({mirror.percent:g}% of requests)"))
    return lines


def describe_match(match: Match) -> str:
    """The conditions in words, all of which must hold: `x-user exact 'alice' and method GET`."""
    conditions = [condition.describe() for condition in match.headers]
    if match.path is not None:
        conditions.append(match.path.describe())
    if match.methods is not None:
        conditions.append(f"method {' or '.join(sorted(match.methods))}")
    return " and ".join(conditions) or EVERY_REQUEST


def describe_edits(edits: Iterable[HeaderEdit], *, values: bool) -> str:
    """`remove Server; set X-Env; append Via`, in the order they are applied."""
    words = []
    for edit in edits:
        if isinstance(edit, HeaderRemoval):
            words.append(f"remove {edit.name}")
        elif isinstance(edit, HeaderAppend):
            words.append(f"append {edit.name}" + (f": {edit.value}" if values else ""))
        else:
            words.append(f"set {edit.name}" + (f": {edit.value}" if values else ""))
    return "; ".join(words)


def describe_answer(answer: Unmatched) -> str:
    body = f"body {answer.body!r}" if answer.body else "empty body"
    return f"{answer.status} from the sidecar, {body}"


def labelled(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


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
    decision.apply_headers(headers)
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


def not_matched(rules: RuleSet, headers: HeaderList, method: str, path: str) -> list[str]:
    """For `--verbose`: each route tried before the one that matched, and why it did not."""
    view = RequestView.of(headers.items(multi=True), method, path)
    lines: list[str] = []
    for route in rules.routes:
        failed = route.match.mismatches(view)
        if not failed:
            break
        label = "not matched:" if not lines else ""
        lines.append(labelled(label, f"{route.name}: {'; '.join(failed)}"))
    return lines


_PICK = re.compile(r"split member (\d+) of \d+ \((.+)\)")


def describe_pick(route: Route, decision: Decision, headers: HeaderList) -> str:
    """Which member of the route's split the decision took, and why (its reason says so)."""
    assert route.split is not None
    split = route.split
    picked = _PICK.fullmatch(decision.reason.removeprefix(f"route {route.name} matched, "))
    if picked is None:  # pragma: no cover - resolve always says which member
        return decision.reason
    number, how = int(picked.group(1)), picked.group(2)
    member = split.members[number - 1]
    text = f"member {number} of {len(split.members)}, weight {member.weight} of {split.total}"
    if how.startswith("sticky") and split.sticky:
        value = RequestView.of(headers.items(multi=True), "GET", "/").headers[split.sticky]
        return f"{text}: {how}, so every request with {split.sticky}: {value} goes there"
    if split.sticky:
        return f"{text}: no {split.sticky} header to stick on, so drawn by weight"
    return f"{text}: drawn by weight for each request"


def route_extras(route: Route, decision: Decision) -> list[str]:
    """What else the route does: response headers, timeout, mirror."""
    lines: list[str] = []
    if decision.response_headers:
        edits = describe_edits(decision.response_headers, values=True)
        lines.append(labelled("response:", edits))
    if decision.timeout is not None:
        timeout = f"{decision.timeout:g} s for the response headers, else 504 from the sidecar"
        lines.append(labelled("timeout:", timeout))
    if route.mirror is not None:
        share = f"{route.mirror.destination} ({route.mirror.percent:g}% of requests)"
        if decision.mirror is not None:
            copied = "a copy of this request goes there, its response discarded"
        else:
            copied = "this request is not copied (drawn for each request)"
        lines.append(labelled("mirror:", f"{share}: {copied}"))
    return lines


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
    return parser


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
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the listening port (default: 1)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


COMMANDS = ("run", "validate", "explain")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")  # `sidecar-dispatcher` alone, or with run's options, runs
    arguments = make_parser().parse_args(argv)
    if arguments.command == "run":
        return run(arguments.options, arguments.workers, arguments.reuse_port)
    if arguments.command == "validate":
        return validate(arguments.path, sys.stdout)
    return explain(arguments, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
