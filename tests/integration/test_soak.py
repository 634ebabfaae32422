"""The soak: many requests from several clients across every rule while the config is swapped
every half second; each answer checked against the config version that dispatched it.

Part of the reliability suite (`make test-reliability`). `make test` runs 12,000 requests
through the runner (the engine of the image) and 3,000 through mitmdump (a third of the speed);
`SOAK_REQUESTS=200000 make soak` runs that many through each. What must hold:

- every request is answered 200 by the upstream its rule names *in the config version that
  dispatched it* (each version sends each key to another upstream and stamps `x-config-version`
  and `x-rule`): 0 failed, 0 misrouted, no mix of one version's destination and another's
  patches;
- a client never sees an older version after a newer one (a swap is atomic and final);
- every request reached an upstream exactly once;
- the sidecar's RSS after the soak is within 10 MiB of its RSS after the warm-up.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .processes import Sidecar, Upstream

pytestmark = pytest.mark.reliability

KEY = "x-soak-key"
RULES = ("a", "b", "c")
CLIENTS = 4
DEFAULT_REQUESTS = {"runner": 12_000, "mitmdump": 3_000}
WARM_UP = 2000
SWAP_EVERY = 0.5  # seconds
RSS_SLACK = 10 * 2**20


def soak_config(version: int, upstreams: list[Upstream], default: Upstream) -> str:
    """Version `version`: rule number i goes to upstream (i + version) % 3, stamped."""
    lines = [f"key: {KEY}", f"destination: {default.url}", "rewrites:"]
    for number, rule in enumerate(RULES):
        target = upstreams[(number + version) % len(upstreams)]
        lines += [
            f"  {rule}:",
            f"    destination: {target.url}",
            "    patch:",
            "      - key: x-config-version",
            f'        val: "{version}"',
            "      - key: x-rule",
            f"        val: {rule}",
        ]
    return "\n".join(lines) + "\n"


def swap_in(path: Path, text: str) -> None:
    """As a ConfigMap update or an editor does: a new file renamed over the old one."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    fresh.rename(path)


@dataclass
class Tally:
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(what)


def client(port: int, number: int, count: int, names: list[str], tally: Tally) -> None:
    """`count` requests, keep-alive, a fresh connection every 50; rules in turn, some default."""
    connection: http.client.HTTPConnection | None = None
    newest = -1
    for sequence in range(count):
        if connection is None or sequence % 50 == 0:
            if connection is not None:
                connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        choice = (number + sequence) % (len(RULES) + 1)
        rule = RULES[choice] if choice < len(RULES) else None
        headers = {KEY: rule} if rule else {}
        try:
            connection.request("GET", f"/soak/{number}/{sequence}", headers=headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            tally.fail(f"client {number} request {sequence}: {e!r}")
            connection = None
            continue
        if response.status != 200:
            tally.fail(f"client {number} request {sequence}: {response.status} {body[:200]!r}")
            continue
        echoed = json.loads(body)
        received = {name.lower(): value for name, value in echoed["headers"]}
        if rule is None:
            if echoed["upstream"] != "default" or "x-config-version" in received:
                tally.fail(f"default request {sequence} reached {echoed['upstream']}")
                continue
        else:
            version = int(received.get("x-config-version", "-1"))
            expected = names[(RULES.index(rule) + version) % len(names)]
            if received.get("x-rule") != rule or echoed["upstream"] != expected:
                tally.fail(
                    f"rule {rule} under version {version} reached {echoed['upstream']} "
                    f"(expected {expected}), x-rule={received.get('x-rule')}"
                )
                continue
            if version < newest:
                tally.fail(f"client {number} saw version {version} after {newest}")
                continue
            newest = version
            with tally.lock:
                tally.versions[version] += 1
        with tally.lock:
            tally.answered += 1
    if connection is not None:
        connection.close()


def run_clients(port: int, total: int, names: list[str]) -> Tally:
    tally = Tally()
    per_client = total // CLIENTS
    threads = [
        threading.Thread(target=client, args=(port, number, per_client, names, tally))
        for number in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def soak_requests(engine: str) -> int:
    chosen = os.environ.get("SOAK_REQUESTS")
    count = int(chosen) if chosen else DEFAULT_REQUESTS[engine]
    return count - count % CLIENTS  # each client sends the same number


@pytest.mark.timeout(600)  # a minute or two here; more on a loaded machine
def test_soak_with_config_swaps_loses_and_misroutes_nothing(
    tmp_path: Path, default_upstream: Upstream, engine: str
) -> None:
    requests = soak_requests(engine)
    with Upstream("u0") as u0, Upstream("u1") as u1, Upstream("u2") as u2:
        upstreams = [u0, u1, u2]
        names = [upstream.name for upstream in upstreams]
        config = tmp_path / "soak.yaml"
        config.write_text(soak_config(0, upstreams, default_upstream))
        options = ["dispatcher_access_log=off"]  # 44,000 log lines would only measure the pipe
        with Sidecar(
            default_upstream.url, config=config, engine=engine, options=options
        ) as sidecar:
            assert sidecar.process is not None
            pid = sidecar.process.pid  # the runner re-executes itself under -O: same pid
            warm = run_clients(sidecar.port, WARM_UP, names)
            assert warm.failures == [] and warm.answered == WARM_UP
            after_warm_up = rss_bytes(pid)
            received_before = sum(len(u.received) for u in [*upstreams, default_upstream])

            stop = threading.Event()
            written = [0]

            def swapper() -> None:
                while not stop.wait(SWAP_EVERY):
                    written[0] += 1
                    swap_in(config, soak_config(written[0], upstreams, default_upstream))

            swapping = threading.Thread(target=swapper)
            swapping.start()
            started = time.monotonic()
            try:
                tally = run_clients(sidecar.port, requests, names)
            finally:
                stop.set()
                swapping.join()
            seconds = time.monotonic() - started
            after_soak = rss_bytes(pid)
            received = sum(len(u.received) for u in [*upstreams, default_upstream])
            logs = sidecar.logs()

    assert tally.failures == [], tally.failures
    assert tally.answered == requests
    assert received - received_before == requests  # each reached an upstream exactly once
    assert written[0] >= int(seconds)  # swaps kept coming all along (2 a second, less I/O)
    assert len(tally.versions) >= written[0] // 2, tally.versions  # ... and took effect
    assert "Traceback" not in logs and "has crashed" not in logs
    grown = after_soak - after_warm_up
    print(
        f"{engine}: {requests} requests in {seconds:.1f} s, {written[0]} swaps, "
        f"{len(tally.versions)} versions seen, RSS {after_warm_up / 2**20:.1f} → "
        f"{after_soak / 2**20:.1f} MiB"
    )
    assert grown < RSS_SLACK, f"RSS grew {grown / 2**20:.1f} MiB over the soak"
