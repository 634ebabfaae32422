"""The runner's flow and connection ids: version-4 UUID text as mitmproxy's, unique, per process."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import types
import uuid

import pytest
from mitmproxy import connection, flow, http

from sidecar_dispatcher._mitmproxy.speed import flow_ids


def test_ids_are_random_version_4_uuids_in_mitmproxys_text_form() -> None:
    ids = [flow_ids.new_id() for _ in range(20_000)]  # ~80 pools
    assert len(set(ids)) == len(ids)
    for text in ids[:2_000]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # as str(uuid.uuid4()) writes it
    # every hex digit turns up in every free position: the bits come from the random bytes
    free = [i for i in range(36) if i not in (8, 13, 14, 18, 19, 23)]
    for position in free:
        assert {text[position] for text in ids} == set("0123456789abcdef")
    assert {text[19] for text in ids} == set("89ab")


def test_ids_follow_the_bytes_of_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = flow_ids._Pool()
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(256)) * (n // 256))
    expected = str(uuid.UUID(bytes=bytes(range(16)), version=4))
    assert pool.uuid4() == expected
    assert pool.uuid4() == str(uuid.UUID(bytes=bytes(range(16, 32)), version=4))


def test_once_installed_flows_and_connections_take_their_ids_from_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(256)) * (n // 256))
    monkeypatch.setattr(flow_ids, "_pool", flow_ids._Pool())
    flow_ids.pooled_ids()
    assert flow_ids.installed()
    client = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2))
    server = connection.Server(address=("127.0.0.1", 3))
    made = http.HTTPFlow(client, server)
    assert [client.id, server.id, made.id] == [
        str(uuid.UUID(bytes=bytes(range(start, start + 16)), version=4)) for start in (0, 16, 32)
    ]
    assert flow.uuid.UUID is uuid.UUID  # type: ignore[attr-defined]  # the rest is the real module


FORK_AND_COMPARE = """
import os
from sidecar_dispatcher._mitmproxy import flow_ids
flow_ids.new_id()  # the pool is filled before the fork
reading, writing = os.pipe()
child = os.fork()
if child == 0:
    os.write(writing, flow_ids.new_id().encode())
    os._exit(0)
os.close(writing)
os.waitpid(child, 0)
print(os.read(reading, 64).decode(), flow_ids.new_id())
"""


@pytest.mark.spawns
def test_a_forked_child_never_hands_out_the_parents_next_ids() -> None:
    # In a process of its own: forking pytest's, which has threads, is deprecated.
    done = subprocess.run(
        [sys.executable, "-c", FORK_AND_COMPARE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    childs, parents = done.stdout.split()
    assert childs != parents
    assert uuid.UUID(childs).version == uuid.UUID(parents).version == 4


def test_the_reach_holds_before_and_after_installing() -> None:
    assert flow_ids._check_uses() is None
    flow_ids.pooled_ids()
    assert flow_ids._check_uses() is None


def test_a_flow_that_makes_its_id_otherwise_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    def __init__(self: flow.Flow, *args: object, **kwargs: object) -> None:
        self.id = "flow-1"

    monkeypatch.setattr(flow.Flow, "__init__", __init__)
    problem = flow_ids._check_uses()
    assert problem is not None and "no longer has `self.id = str(uuid.uuid4())`" in problem


def test_a_module_that_uses_uuid_for_more_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inspect, "getsource", lambda obj: "uuid.uuid4()\nuuid.UUID(x)\n")
    assert flow_ids._check_uses() == "mitmproxy.flow uses uuid 2 times, not once (for its ids)"


def test_a_replaced_uuid_module_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "uuid", types.SimpleNamespace(uuid4=lambda: "x"))
    assert flow_ids._check_uses() == "mitmproxy.connection.uuid is not the uuid module"
