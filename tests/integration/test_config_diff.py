"""`sidecar-dispatcher diff` on traffic recorded by real sidecars in front of real upstreams.

mitmdump with the addon records with `-w`, the runner with `--set save_stream_file=…`; a
recording mitmdump in front of the sidecar writes a HAR file (mitmproxy's `hardump`), as a
browser's devtools would: the clients' requests, without decisions.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sidecar_dispatcher.testing.configs import dispatch_config
from sidecar_dispatcher.testing.loopback import free_port, send, wait_until_accepting

from .conftest import SaveConfig
from .processes import BIN, Sidecar, Upstream, stop_process

TRAFFIC = [  # (value of the key header, or None; path): what the clients send
    (None, "/a"),
    (None, "/b?session=abc"),
    (None, "/c"),
    ("dev", "/d1"),
    ("dev", "/d2?q=1"),
    ("qa", "/q"),
    ("token", "/t"),
    ("prod", "/p"),
    ("down", "/x"),  # its destination is down: a 502, recorded with its decision
]


def send_traffic(port: int) -> None:
    for value, path in TRAFFIC:
        send(port, "GET", path, [("environment", value)] if value else [])


def diff(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    """The real command, in a process of its own."""
    command = [str(BIN / "sidecar-dispatcher"), "diff", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def recording(
    engine: str,
    config_file: Path,
    default_upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """TRAFFIC through mitmdump -w or the runner with save_stream_file; the sidecar stopped."""
    path = tmp_path_factory.mktemp("recording") / "traffic.flows"
    env = {"SIDECAR_CONFIG": str(config_file)}
    if engine == "runner":
        sidecar = Sidecar("", env=env, engine="runner", options=[f"save_stream_file={path}"])
    else:
        command = [str(BIN / "mitmdump"), "-w", str(path)]
        sidecar = Sidecar(default_upstream.url, env=env, command=command)
    with sidecar:
        send_traffic(sidecar.port)
    return path


@pytest.fixture(scope="module")
def moved(
    save_config: SaveConfig, default_upstream: Upstream, dev_upstream: Upstream, closed_port: int
) -> Path:
    """config_file with the dev rule's destination moved to the default upstream."""
    return save_config(
        dispatch_config(
            default_upstream.url,
            dev=f"{default_upstream.url}/moved",
            token=dev_upstream.url,
            down=f"http://127.0.0.1:{closed_port}",
        )
    )


def test_an_unchanged_config_changes_nothing_and_sends_nothing(
    recording: Path, config_file: Path, default_upstream: Upstream, dev_upstream: Upstream
) -> None:
    received = len(default_upstream.received) + len(dev_upstream.received)
    result = diff("--flows", recording, "--config", config_file)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "9 requests, 0 would change\n",
        "",
    )
    assert len(default_upstream.received) + len(dev_upstream.received) == received


def test_moving_one_rules_destination_changes_exactly_its_requests(
    recording: Path, moved: Path, default_upstream: Upstream, dev_upstream: Upstream
) -> None:
    result = diff("--flows", recording, "--config", moved)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "9 requests, 2 would change",
        f"  2  dev ({dev_upstream.url}/base) → dev ({default_upstream.url}/moved)"
        "  e.g. GET /d1, GET /d2",
    ]
    printed = json.loads(diff("--json", "--flows", recording, "--config", moved).stdout)
    assert (printed["total"], printed["changed"], len(printed["groups"])) == (9, 2, 1)


def test_a_changed_patch_is_reported_by_header_name_never_by_value(
    recording: Path, config_file: Path, save_config: SaveConfig
) -> None:
    new = save_config(config_file.read_text().replace("Bearer s3cret", "Bearer r0tated"))
    result = diff("--flows", recording, "--config", new)
    assert result.returncode == 1
    assert result.stdout.splitlines()[1].endswith("  headers: Authorization  e.g. GET /t")
    as_json = diff("--json", "--flows", recording, "--config", new).stdout
    assert json.loads(as_json)["groups"][0]["headers_changed"] == ["Authorization"]
    for printed in (result.stdout, as_json):
        assert "s3cret" not in printed and "r0tated" not in printed


def test_against_an_old_config_gives_the_same_answer(
    recording: Path, config_file: Path, moved: Path
) -> None:
    against = diff("--flows", recording, "--config", moved, "--against", config_file)
    assert against.stdout == diff("--flows", recording, "--config", moved).stdout
    assert against.returncode == 1


def test_bad_inputs_exit_2_with_a_clear_message(
    recording: Path, config_file: Path, save_config: SaveConfig, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.flows"
    truncated.write_bytes(recording.read_bytes()[:-10])
    result = diff("--flows", truncated, "--config", config_file)
    assert result.returncode == 2
    assert result.stderr.startswith(f"sidecar-dispatcher diff: {truncated}: flow 9: truncated")
    assert result.stdout == ""
    result = diff("--flows", config_file, "--config", config_file)
    assert result.returncode == 2
    assert "flow 1: not a mitmproxy flow file" in result.stderr
    bad = save_config("key: environment\ndestination: ftp://x\nrewrites: []\n")
    result = diff("--flows", recording, "--config", bad)
    assert result.returncode == 2
    assert f"{bad}:2:14: destination: expected an absolute http:// or https:// URL" in result.stderr


def test_the_documented_filter_records_only_requests_the_sidecar_decided(
    config_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "decided.flows"
    options = [f"save_stream_file={path}", "save_stream_filter=~comment ."]
    env = {"SIDECAR_CONFIG": str(config_file)}
    with Sidecar("", env=env, engine="runner", options=options) as sidecar:
        refused = sidecar.request("GET", "/", [("environment", "dev"), ("environment", "qa")])
        assert refused.status == 400  # no decision: not recorded
        send_traffic(sidecar.port)
    result = diff("--flows", path, "--config", config_file)
    assert (result.returncode, result.stdout) == (0, "9 requests, 0 would change\n")


# --- HAR


class HarRecorder:
    """mitmdump in reverse mode in front of the sidecar, writing every flow as HAR on exit."""

    def __init__(self, target_port: int, har: Path) -> None:
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="har-recorder-")
        self.arguments: Sequence[str] = [
            str(BIN / "mitmdump"),
            "--mode",
            f"reverse:http://127.0.0.1:{target_port}@{self.port}",
            "--set",
            "listen_host=127.0.0.1",
            "--set",
            "keep_host_header=true",
            "--set",
            f"confdir={self.workdir}",
            "--set",
            f"hardump={har}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HarRecorder:
        self.process = subprocess.Popen(
            self.arguments,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until_accepting(self.port, self.process, "the HAR recorder")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)  # SIGTERM: mitmdump writes the HAR file as it stops


@pytest.fixture(scope="module")
def har(
    config_file: Path, default_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("har") / "clients.har"
    env = {"SIDECAR_CONFIG": str(config_file)}
    with Sidecar(default_upstream.url, env=env) as sidecar:
        with HarRecorder(sidecar.port, path) as recorder:
            send_traffic(recorder.port)
        yield path


def test_a_har_file_is_compared_under_both_configs(
    har: Path, config_file: Path, moved: Path
) -> None:
    assert len(json.loads(har.read_text())["log"]["entries"]) == len(TRAFFIC)
    result = diff("--flows", har, "--config", moved, "--against", config_file)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == "9 requests, 2 would change"
    assert "e.g. GET /d1, GET /d2" in result.stdout
    unchanged = diff("--flows", har, "--config", config_file, "--against", config_file)
    assert unchanged.returncode == 0


def test_a_har_file_without_an_old_config_is_refused_naming_the_entry(
    har: Path, moved: Path
) -> None:
    result = diff("--flows", har, "--config", moved)
    assert result.returncode == 2
    assert result.stderr.startswith(f"sidecar-dispatcher diff: {har}: entry 1 (GET /a): no")
    assert "--against OLD.yaml" in result.stderr
