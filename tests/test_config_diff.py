"""`sidecar-dispatcher diff`: recorded requests resolved again under a new config, compared."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy.addons import save
from mitmproxy.io import FlowWriter
from mitmproxy.test import taddons

from sidecar_dispatcher.config.load import load_config
from sidecar_dispatcher.core.recording import RecordedRequest
from sidecar_dispatcher.testing.configs import TOKEN, Rewrite, config_text, dispatch_config
from sidecar_dispatcher.tools.cli import make_parser
from sidecar_dispatcher.tools.diff import DiffReport, compare

from .conftest import WriteConfig, run_command
from .flows import Harness, answer, make_flow
from .test_readme import ROOT, dispatcher_commands

DEFAULT, DEV, SECURE = (
    "http://default.test:8081",
    "http://dev.test:8082/base",
    "https://secure.test",
)
MOVED = dispatch_config(DEFAULT, dev="http://moved.test:9000/base", token=SECURE)
NEW_SECRET = config_text(
    DEFAULT,
    {
        "dev": Rewrite((("Host", "example.com"), ("dispatched", "true")), DEV),
        "qa": Rewrite((("dispatched", "true"),)),
        "token": Rewrite((("Authorization", "Bearer n3w-s3cret"), *TOKEN[1:]), SECURE),
    },
)
TRAFFIC = [  # (key header value or None, path)
    (None, "/a"),
    (None, "/b?session=x"),
    (None, "/c"),
    ("dev", "/d1"),
    ("dev", "/d2?q=1"),
    ("token", "/t"),
    ("prod", "/p"),
]


@pytest.fixture
def recorded(harness: Harness, tmp_path: Path) -> Path:
    """TRAFFIC through the dispatcher (tests/flows.py's CONFIG), as `mitmdump -w` writes it."""
    path = tmp_path / "traffic.flows"
    with path.open("wb") as file:
        writer = FlowWriter(file)
        for value, target in TRAFFIC:
            headers = [("environment", value)] if value else []
            writer.add(answer(harness.dispatch(make_flow(*headers, path=target))))
    return path


def diff(*arguments: str) -> tuple[int, str, str]:
    result = run_command("diff", *arguments)
    return result.returncode, result.stdout, result.stderr


def request(*headers: tuple[str, str], path: str = "/x", identity: str = "1") -> RecordedRequest:
    """A request as a HAR file records it: the client's, without a decision."""
    return RecordedRequest("test.har: entry 1", identity, "GET", path, headers, None, False, None)


# --- recorded decisions


def test_an_unchanged_config_changes_nothing(recorded: Path, config_path: Path) -> None:
    assert diff("--flows", str(recorded), "--config", str(config_path)) == (
        0,
        "7 requests, 0 would change\n",
        "",
    )


def test_a_moved_destination_is_one_group_with_its_count_and_examples(
    recorded: Path, write_config: WriteConfig
) -> None:
    status, out, _ = diff("--flows", str(recorded), "--config", str(write_config(MOVED)))
    assert status == 1
    assert out.splitlines() == [
        "7 requests, 2 would change",
        "  2  dev (http://dev.test:8082/base) → dev (http://moved.test:9000/base)"
        "  e.g. GET /d1, GET /d2",
    ]


def test_a_changed_patch_names_the_header_and_never_its_value(
    recorded: Path, write_config: WriteConfig
) -> None:
    new = str(write_config(NEW_SECRET))
    status, out, _ = diff("--flows", str(recorded), "--config", new)
    assert status == 1
    assert out.splitlines()[1] == (
        "  1  token (https://secure.test) → token (https://secure.test)  headers: Authorization"
        "  e.g. GET /t"
    )
    status, printed, _ = diff("--json", "--flows", str(recorded), "--config", new)
    assert json.loads(printed)["groups"][0]["headers_changed"] == ["Authorization"]
    assert "s3cret" not in out + printed


def test_the_json_report_has_totals_and_groups(recorded: Path, write_config: WriteConfig) -> None:
    status, out, _ = diff(
        "--json", "--show", "1", "--flows", str(recorded), "--config", str(write_config(MOVED))
    )
    assert status == 1
    assert json.loads(out) == {
        "total": 7,
        "changed": 2,
        "groups": [
            {
                "from": {"rule": "dev", "label": "dev", "destination": DEV, "answer": None},
                "to": {
                    "rule": "dev",
                    "label": "dev",
                    "destination": "http://moved.test:9000/base",
                    "answer": None,
                },
                "count": 2,
                "headers_changed": [],
                "path_changed": False,
                "examples": [{"method": "GET", "path": "/d1"}],
            }
        ],
    }


def test_several_files_add_up(recorded: Path, write_config: WriteConfig) -> None:
    status, out, _ = diff(
        "--flows", str(recorded), "--flows", str(recorded), "--config", str(write_config(MOVED))
    )
    assert (status, out.splitlines()[0]) == (1, "14 requests, 4 would change")


def test_a_new_rule_taking_default_traffic_and_an_unmatched_answer(
    recorded: Path, write_config: WriteConfig
) -> None:
    prod = dispatch_config(DEFAULT, dev=DEV, token=SECURE).replace(
        "rewrites:\n", "rewrites:\n  prod:\n    destination: http://prod.test\n"
    )
    out = diff("--flows", str(recorded), "--config", str(write_config(prod)))[1]
    assert "  1  default (http://default.test:8081) → prod (http://prod.test)" in out
    unmatched = dispatch_config(DEFAULT, dev=DEV, token=SECURE) + "unmatched: {status: 404}\n"
    out = diff("--flows", str(recorded), "--config", str(write_config(unmatched)))[1]
    assert out.splitlines()[:2] == [
        "7 requests, 4 would change",
        "  4  default (http://default.test:8081) → unmatched (404 from the sidecar)"
        "  e.g. GET /a, GET /b, GET /c",
    ]


# --- against an old config


def test_against_an_old_config_compares_the_decisions_under_both(
    recorded: Path, config_path: Path, write_config: WriteConfig
) -> None:
    moved = str(write_config(MOVED))
    against = diff("--flows", str(recorded), "--config", moved, "--against", str(config_path))
    assert against == diff("--flows", str(recorded), "--config", moved)
    assert diff("--flows", str(recorded), "--config", moved, "--against", moved)[0] == 0


def test_a_request_without_a_decision_needs_an_old_config(write_config: WriteConfig) -> None:
    rules = load_config(str(write_config(MOVED)))
    with pytest.raises(ValueError, match=r"test.har: entry 1: no dispatcher decision recorded"):
        compare(request(), rules, None)
    assert not compare(request(), rules, rules).changed


def test_a_split_by_weight_keeps_its_draw_under_both_configs(write_config: WriteConfig) -> None:
    split = (
        "routes:\n  - name: canary\n    split:\n"
        "      - {destination: http://stable.test, weight: 50}\n"
        "      - {destination: http://canary.test, weight: 50}\n"
    )
    old = load_config(str(write_config(f"key: environment\ndestination: {DEFAULT}\n{split}")))
    new = load_config(str(write_config(f"key: environment\ndestination: {DEFAULT}\n{split}")))
    report = DiffReport()
    for number in range(200):
        report.add(compare(request(identity=str(number)), new, old))
    assert (report.total, report.changed) == (200, 0)


def test_conflicting_key_headers_are_refused_under_both(write_config: WriteConfig) -> None:
    rules = load_config(str(write_config(MOVED)))
    conflicting = request(("environment", "dev"), ("environment", "qa"))
    assert not compare(conflicting, rules, rules).changed
    other_key = load_config(str(write_config(f"key: tenant\ndestination: {DEFAULT}\n")))
    change = compare(conflicting, other_key, rules)
    assert (change.before.label, change.after.label) == ("refused", "default")


def test_a_rewritten_path_is_a_change(write_config: WriteConfig) -> None:
    def routes(prefix: str) -> str:
        return (
            f"key: environment\ndestination: {DEFAULT}\nroutes:\n  - name: api\n"
            f"    match: {{path: {{prefix: /api/}}}}\n    rewrite_path: {{prefix: {prefix}}}\n"
        )

    old, new = (load_config(str(write_config(routes(p)))) for p in ("/v1/", "/v2/"))
    change = compare(request(path="/api/items?id=1"), new, old)
    assert change.path_changed and change.before == change.after
    assert not compare(request(path="/other"), new, old).changed


def test_a_report_keeps_counts_and_at_most_show_examples_per_group(
    write_config: WriteConfig,
) -> None:
    old = load_config(str(write_config(dispatch_config(DEFAULT))))
    new = load_config(str(write_config(dispatch_config("http://new.test"))))
    report = DiffReport(show=2)
    for number in range(1000):
        report.add(compare(request(path=f"/item/{number % 3}"), new, old))
    ((_, group),) = report.groups.items()
    assert (group.count, group.examples) == (1000, [("GET", "/item/0"), ("GET", "/item/1")])


# --- the command


def test_a_bad_config_exits_2_with_its_positions(recorded: Path, write_config: WriteConfig) -> None:
    bad = write_config("key: environment\ndestination: nowhere\n")
    status, out, err = diff("--flows", str(recorded), "--config", str(bad))
    assert (status, out) == (2, "")
    assert f"{bad}:2:14: destination: expected an absolute http:// or https:// URL" in err
    assert diff("--flows", str(recorded), "--config", str(recorded), "--against", str(bad))[0] == 2


def test_bad_recordings_exit_2_naming_the_file(config_path: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.flows"
    empty.write_bytes(b"")
    assert diff("--flows", str(empty), "--config", str(config_path)) == (
        2,
        "",
        "sidecar-dispatcher diff: no HTTP request in the files given\n",
    )
    status, _, err = diff("--flows", str(config_path), "--config", str(config_path))
    assert status == 2
    assert err.startswith(f"sidecar-dispatcher diff: {config_path}: flow 1: not a mitmproxy flow")


def test_show_takes_a_count(recorded: Path, config_path: Path) -> None:
    with pytest.raises(SystemExit) as refused:
        make_parser().parse_args(["diff", "--flows", "x", "--config", "y", "--show", "-1"])
    assert refused.value.code == 2
    assert diff("--show", "0", "--flows", str(recorded), "--config", str(config_path))[0] == 0


@pytest.mark.spawns
def test_diff_of_a_har_file_imports_nothing_from_mitmproxy(
    tmp_path: Path, config_path: Path
) -> None:
    har = tmp_path / "browser.har"
    entry = {"request": {"method": "GET", "url": "http://s.test/", "headers": []}}
    har.write_text(json.dumps({"log": {"entries": [entry]}}))
    arguments = ["diff", "--flows", str(har), "--config", str(config_path)]
    probe = (
        "import sys; from sidecar_dispatcher.tools.cli import main; "
        f"code = main({[*arguments, '--against', str(config_path)]!r}); "
        "print(code, sorted(m for m in sys.modules if m.partition('.')[0] == 'mitmproxy'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines()[-1] == "0 []"
    assert diff(*arguments[1:]) == (
        2,
        "",
        f"sidecar-dispatcher diff: {har}: entry 1 (GET /): no dispatcher decision recorded (a "
        "request the sidecar refused, or traffic recorded without it): compare with --against "
        "OLD.yaml\n",
    )


# --- the documentation

PAGE = ROOT / "docs" / "config-diff.md"


def test_the_recording_options_the_docs_show_are_those_of_mitmproxys_save_addon() -> None:
    shown = set(re.findall(r"\b(save_stream_\w+)=", PAGE.read_text(encoding="utf-8")))
    assert shown == {"save_stream_file", "save_stream_filter"}
    with taddons.context(save.Save()) as tctx:
        assert shown <= set(tctx.options.keys())


def test_every_diff_command_the_docs_show_parses() -> None:
    shown = [a for code, a in dispatcher_commands() if code.command_line and a[0] == "diff"]
    assert shown, "no `sidecar-dispatcher diff` command in the documents"
    for arguments in shown:
        make_parser().parse_args([re.sub(r"\$\{?\w+\}?", "x", a) for a in arguments])
