"""Flow and connection ids from a pool of random bytes: mitmproxy's uuid4 ids, in the runner.

    pooled_ids()   # once per process; the lean runner only

mitmproxy gives every flow and every connection object (a server connection is made per
request) `str(uuid.uuid4())`: a getrandom() system call, a UUID object and its formatting, twice
per request — about 2 % of the runner's samples (bench/results/profile.md). The ids made here are
the same kind of value — random version-4 UUIDs in the same text form, from the same source
(os.urandom) — read 256 at a time. A forked child starts a pool of its own, so that two
processes never hand out the same ids.
"""

from __future__ import annotations

import inspect
import os
import types
import uuid
from typing import Any

from mitmproxy import connection, flow

from ..checking import Reach, Shortcut, first_problem, sources_lack

_POOL_IDS = 256
_VARIANT = "89ab" * 4  # the hex digit after the variant bits (10xx) are set, by its low bits


class _Pool:
    __slots__ = ("bytes", "position")

    def __init__(self) -> None:
        self.bytes = b""
        self.position = 0

    def uuid4(self) -> str:
        position = self.position
        if position == len(self.bytes):
            self.bytes, position = os.urandom(16 * _POOL_IDS), 0
        self.position = position + 16
        h = self.bytes[position : position + 16].hex()
        # As uuid.UUID(bytes=..., version=4): version nibble 4, variant bits 10.
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"

    def reset(self) -> None:
        self.bytes, self.position = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


class _UuidModule(types.ModuleType):
    """The `uuid` module as mitmproxy's flow and connection modules see it: uuid4 pooled (it
    returns the text form, which `str()` keeps), everything else the real module's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


def new_id() -> str:
    return _pool.uuid4()


_uuid_module = _UuidModule("uuid")
_uuid_module.uuid4 = new_id  # type: ignore[attr-defined]

_USERS = (flow, connection)  # the modules whose `uuid` is replaced


def pooled_ids() -> None:
    for module in _USERS:
        module.uuid = _uuid_module  # type: ignore[attr-defined]


def installed() -> bool:
    return all(getattr(module, "uuid", None) is _uuid_module for module in _USERS)


# Where mitmproxy makes ids; each module must use `uuid` for nothing else.
STOCK_USES = (
    (flow.Flow, "__init__", ("self.id = str(uuid.uuid4())",)),
    (connection, "Connection", ("id: str = field(default_factory=lambda: str(uuid.uuid4()))",)),
)


def _check_uses(_lean: object = None) -> str | None:
    for module in _USERS:
        current = getattr(module, "uuid", None)
        if current is not uuid and current is not _uuid_module:
            return f"{module.__name__}.uuid is not the uuid module"
        uses = inspect.getsource(module).count("uuid.")
        if uses != 1:
            return f"{module.__name__} uses uuid {uses} times, not once (for its ids)"
    return first_problem(
        lambda: sources_lack(STOCK_USES),
    )


FLOW_ID_REACHES = (
    Reach("flow and connection ids (uuid4 from a pool)", _check_uses, shortcut=Shortcut.FLOW_IDS),
)
