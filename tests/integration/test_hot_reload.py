"""End to end: the config changes under a steady stream of requests, in every way files change.

A client thread sends `environment: dev` requests all the time. Each change moves `dev` to
another upstream; each response says which upstream answered. A change must be applied within
2 s, a bad file or a deletion must not be applied, and no request may fail or reach an
upstream that neither the old nor the new config names.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar_dispatcher.testing.loopback import send

from .processes import ENGINES, Sidecar, Upstream

APPLY_WITHIN = 2.0


def config_text(default: Upstream, dev: Upstream) -> str:
    # One short rule rather than testing.configs' four: the slow writes below take a pause per line.
    return (
        f"key: environment\ndestination: {default.url}\n"
        f"rewrites:\n  dev:\n    patch:\n      - {{key: dispatched, val: true}}\n"
        f"    destination: {dev.url}\n"
    )


@dataclass(frozen=True)
class Answer:
    sent_at: float
    status: int
    upstream: str | None
    error: str | None = None


class SteadyClient:
    """Sends `environment: dev` requests back to back until stopped, recording every answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.answers) < 20_000:
            sent_at = time.monotonic()
            try:
                response = send(self.port, "GET", "/", [("environment", "dev")], timeout=10)
                upstream = response.header("Upstream")
                self.answers.append(Answer(sent_at, response.status, upstream))
            except OSError as e:
                self.answers.append(Answer(sent_at, 0, None, repr(e)))
            time.sleep(0.01)

    def wait_for(self, upstream: str, since: float, timeout: float = 5.0) -> float:
        """Seconds from `since` until answers come only from `upstream`; fails after timeout."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            recent = [a for a in self.answers[-3:] if a.sent_at > since]
            if len(recent) == 3 and all(a.upstream == upstream for a in recent):
                first = next(
                    a for a in self.answers if a.sent_at > since and a.upstream == upstream
                )
                return first.sent_at - since
            time.sleep(0.02)
        raise AssertionError(f"dev did not move to {upstream} within {timeout}s")


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    with ExitStack() as stack:
        names = ("default", "one", "two", "three", "four")
        yield {name: stack.enter_context(Upstream(name)) for name in names}


def configmap_layout(folder: Path, text: str, version: int) -> Path:
    """What the kubelet mounts: config.yaml -> ..data/config.yaml, ..data -> ..<version>."""
    data_dir = folder / f"..2026_11_26_{version:02d}"
    data_dir.mkdir()
    (data_dir / "config.yaml").write_text(text)
    temporary = folder / "..data_tmp"
    temporary.symlink_to(data_dir.name)
    temporary.rename(folder / "..data")  # atomic swap, as the kubelet does
    link = folder / "config.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/config.yaml")
    return link


@pytest.mark.parametrize("engine", ENGINES)
def test_every_kind_of_change_is_applied_and_bad_ones_are_not(
    tmp_path: Path, upstreams: dict[str, Upstream], engine: str
) -> None:
    default = upstreams["default"]
    path = configmap_layout(tmp_path, config_text(default, upstreams["one"]), 1)
    timings: dict[str, float] = {}
    with Sidecar(default.url, env={"SIDECAR_CONFIG": str(path)}, engine=engine) as sidecar:
        with SteadyClient(sidecar.port) as client:
            client.wait_for("one", since=time.monotonic() - 1)

            # 1. a ConfigMap update: the kubelet swaps the ..data symlink
            changed = time.monotonic()
            configmap_layout(tmp_path, config_text(default, upstreams["two"]), 2)
            timings["configmap swap"] = client.wait_for("two", changed)

            # 2. an editor-style save: a temporary file renamed over the path
            target = Path(os.path.realpath(path))
            temporary = target.with_name(".config.yaml.swp")
            temporary.write_text(config_text(default, upstreams["three"]))
            changed = time.monotonic()
            temporary.rename(target)
            timings["rename over"] = client.wait_for("three", changed)

            # 3. a slow in-place rewrite: the half-written file must never be applied
            text = config_text(default, upstreams["four"])
            changed = time.monotonic()
            with target.open("w") as file:  # truncates: the file is empty, then partial
                for line in text.splitlines(keepends=True):
                    file.write(line)
                    file.flush()
                    time.sleep(0.4)  # longer than the watcher's settle time
            written = time.monotonic()
            timings["slow in-place write"] = client.wait_for("four", written)

            # 4. a bad config: not applied, the last good one keeps serving
            target.write_text(
                config_text(default, upstreams["one"]).replace("destination:", "destnation:", 1)
            )
            sidecar.wait_for_log("is invalid; still serving the last good config")
            time.sleep(APPLY_WITHIN)
            assert {a.upstream for a in client.answers[-5:]} == {"four"}

            # 5. the file deleted: still the last good config
            target.unlink()
            sidecar.wait_for_log("is missing; still serving the last good config")
            time.sleep(APPLY_WITHIN)
            assert {a.upstream for a in client.answers[-5:]} == {"four"}

            # 6. the file back, good again
            changed = time.monotonic()
            target.write_text(config_text(default, upstreams["two"]))
            timings["file restored"] = client.wait_for("two", changed)

        failures = [a for a in client.answers if a.status != 200]
        assert failures == [], failures[:5]
        names_ever_configured = {"one", "two", "three", "four"}
        assert {a.upstream for a in client.answers} <= names_ever_configured
        assert all(seconds < APPLY_WITHIN for seconds in timings.values()), timings
        assert len(client.answers) > 100
        logs = sidecar.logs()
        assert f"{path}:2:1: destnation: unknown key 'destnation'" in logs
        assert "(inotify)" in logs
    print(f"\nreload timings (s): {timings}; {len(client.answers)} requests, 0 failed")


@pytest.fixture
def dev_to_one(tmp_path: Path, upstreams: dict[str, Upstream]) -> Path:
    """A config file in a plain folder that sends dev to upstream one."""
    path = tmp_path / "config.yaml"
    path.write_text(config_text(upstreams["default"], upstreams["one"]))
    return path


def test_partial_file_is_never_read_while_being_written(
    dev_to_one: Path, upstreams: dict[str, Upstream]
) -> None:
    default, path = upstreams["default"], dev_to_one
    with Sidecar(default.url, config=path) as sidecar:
        # Truncated after the first two lines this file is valid and sends dev to the default:
        # if it were read half-written, requests would go to "default".
        with SteadyClient(sidecar.port) as client:
            client.wait_for("one", since=time.monotonic() - 1)
            with path.open("w") as file:
                for line in config_text(default, upstreams["two"]).splitlines(keepends=True):
                    file.write(line)
                    file.flush()
                    time.sleep(0.5)
            client.wait_for("two", time.monotonic())
        assert "default" not in {a.upstream for a in client.answers}
        assert sidecar.logs().count("reloaded (file changed)") == 1


def test_sighup_reloads_on_demand_even_without_watching(
    dev_to_one: Path, upstreams: dict[str, Upstream]
) -> None:
    default, path = upstreams["default"], dev_to_one
    with Sidecar(default.url, config=path, options=["dispatcher_watch=false"]) as sidecar:
        assert sidecar.request("GET", "/", [("environment", "dev")]).header("Upstream") == "one"
        path.write_text(config_text(default, upstreams["two"]))
        time.sleep(1.0)  # not watching: nothing changes by itself
        assert sidecar.request("GET", "/", [("environment", "dev")]).header("Upstream") == "one"
        assert sidecar.process is not None
        sidecar.process.send_signal(signal.SIGHUP)
        sidecar.wait_for_log("reloaded (SIGHUP)")
        assert sidecar.request("GET", "/", [("environment", "dev")]).header("Upstream") == "two"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_fifo_at_the_config_path_neither_freezes_traffic_nor_is_applied(
    dev_to_one: Path, upstreams: dict[str, Upstream], engine: str
) -> None:
    # open() on a FIFO waits for a writer: read on the event loop, it would stop all traffic.
    default, path = upstreams["default"], dev_to_one
    with Sidecar(default.url, env={"SIDECAR_CONFIG": str(path)}, engine=engine) as sidecar:
        with SteadyClient(sidecar.port) as client:
            client.wait_for("one", since=time.monotonic() - 1)
            fifo = path.with_name("incoming.fifo")
            os.mkfifo(fifo)
            fifo.rename(path)  # the watcher sees a new file at the path
            sidecar.wait_for_log("expected a regular config file, found a FIFO")
            assert sidecar.process is not None
            sidecar.process.send_signal(signal.SIGHUP)  # and asked to read it again
            sidecar.wait_for_log("SIGHUP: config file")
            served = len(client.answers)
            time.sleep(1.0)
            assert len(client.answers) > served + 10  # still serving, at its usual pace
            path.unlink()
            changed = time.monotonic()
            path.write_text(config_text(default, upstreams["two"]))
            client.wait_for("two", changed)
        assert [a for a in client.answers if a.status != 200] == []
        assert {a.upstream for a in client.answers} <= {"one", "two"}
