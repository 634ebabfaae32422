"""Read a mitmproxy flow file one request at a time, parsing only what a diff needs.

    for request in read_flow_file("traffic.flows"):   # RecordedRequest values, in order
        ...

A flow file (`mitmdump -w`, mitmweb's Save, the `save_stream_file` option) is a sequence of
tnetstrings, one dictionary per flow, shaped like `Flow.get_state()`. mitmproxy's `FlowReader`
builds every field of every flow into objects, about half a millisecond a flow on the reference
machine; a diff needs only the request line and headers, the client's address and the decision.
So each flow's bytes are read (one flow at a time, as `FlowReader` reads them) and walked by the
length prefixes of its values: the values wanted are parsed, the others (bodies, the response,
TLS details) are stepped over unparsed. Memory is that of the largest flow, not of the file.

A flow of another format version (an older mitmproxy) is read whole and migrated by mitmproxy
(`mitmproxy.io.compat.migrate_flow`), as `FlowReader` does; a newer one is refused by it.

This reads mitmproxy's serialisation by its field names: a reach into mitmproxy's internals,
checked by `FLOW_FILE_REACHES` (the field names and the format version it was written for), and
compared with `FlowReader` in tests/test_recorded.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from mitmproxy import version
from mitmproxy.io import compat, tnetstring

from ...core.decision import METADATA_KEY
from ...core.recording import (
    CLIENT_REQUEST_KEY,
    RecordedRequest,
    RecordingError,
    as_the_client_sent_it,
)
from ..checking import Reach

logger = logging.getLogger(__name__)

Spec = Mapping[str, "Spec | None"]  # a key's spec: None parses its whole value
WHOLE = None
DECISION: Spec = dict.fromkeys(
    ("rule", "label", "destination", "path", "headers_set", "patched", "answer"), WHOLE
)
WANTED: Spec = {
    "version": WHOLE,
    "type": WHOLE,
    "id": WHOLE,
    "metadata": {METADATA_KEY: {**DECISION, CLIENT_REQUEST_KEY: WHOLE}},
    "client_conn": {"peername": WHOLE},
    "request": {"method": WHOLE, "path": WHOLE, "headers": WHOLE},
}
MAX_LENGTH_DIGITS = 12  # as mitmproxy's tnetstring.load: a longer prefix is not a flow file


class Truncated(ValueError):
    """The file ends inside a flow."""


def _flow_bytes(file: BinaryIO) -> bytes | None:
    """The next flow's tnetstring, whole; None at the end of the file."""
    digits = b""
    while (character := file.read(1)).isdigit():
        digits += character
        if len(digits) > MAX_LENGTH_DIGITS:
            raise ValueError("an absurdly large length prefix")
    if not character and not digits:
        return None
    if not character:
        raise Truncated("the file ends inside a length prefix")
    if character != b":" or not digits:
        raise ValueError("no tnetstring length prefix")
    size = int(digits)
    value = file.read(size + 1)
    if len(value) != size + 1:
        raise Truncated(f"the file ends {size + 1 - len(value)} bytes short of the flow's end")
    return digits + b":" + value


def _dictionary(data: bytes, start: int, end: int, spec: Spec) -> dict[str, Any]:
    """The wanted keys of the tnetstring dictionary whose items are `data[start:end]`: each
    key and value found by its length prefix; only the wanted values are parsed."""
    found: dict[str, Any] = {}
    position = start
    index = data.index
    while position < end:
        colon = index(b":", position, position + _PREFIX)
        key_end = colon + 1 + int(data[position:colon])  # a key: text or bytes, not parsed
        key = data[colon + 1 : key_end].decode("ascii", "surrogateescape")
        colon = index(b":", key_end + 1, key_end + 1 + _PREFIX)
        value_end = colon + 1 + int(data[key_end + 1 : colon])  # at its type character
        if value_end >= end:
            raise ValueError("a value overruns its dictionary")
        if key in spec:
            if (inner := spec[key]) is None:
                found[key] = _value(data, key_end + 1, end)[0]
            elif data[value_end] == _DICTIONARY:
                found[key] = _dictionary(data, colon + 1, value_end, inner)
            else:
                raise ValueError(f"{key} is not a dictionary")
        position = value_end + 1
    if position != end:
        raise ValueError("a dictionary's items overrun it")
    return found


_PREFIX = MAX_LENGTH_DIGITS + 1  # where a length prefix's colon must be, at the latest
_DICTIONARY, _LIST, _TEXT, _BYTES = ord("}"), ord("]"), ord(";"), ord(",")
_SCALARS: dict[int, Callable[[bytes], object]] = {
    ord("#"): int,
    ord("^"): float,
    ord("!"): {b"true": True, b"false": False}.__getitem__,
    ord("~"): {b"": None}.__getitem__,
}


def _value(data: bytes, position: int, end: int) -> tuple[Any, int]:
    """The tnetstring value at `position`, as mitmproxy's tnetstring module reads it (faster,
    from bytes), and the position after it; ValueError or KeyError when it is not one."""
    colon = data.index(b":", position, position + _PREFIX)
    start = colon + 1
    stop = start + int(data[position:colon])  # at the value's type character
    if stop >= end:
        raise ValueError("a value overruns its container")
    kind = data[stop]
    if kind == _TEXT:
        return data[start:stop].decode("utf-8"), stop + 1
    if kind == _BYTES:
        return data[start:stop], stop + 1
    if kind == _LIST:
        items = []
        while start < stop:
            item, start = _value(data, start, stop)
            items.append(item)
        return items, stop + 1
    if kind == _DICTIONARY:
        mapping = {}
        while start < stop:
            key, start = _value(data, start, stop)
            mapping[key], start = _value(data, start, stop)
        return mapping, stop + 1
    return _SCALARS[kind](data[start:stop]), stop + 1


def read_flow_file(path: str) -> Iterator[RecordedRequest]:
    """Every HTTP request in the file, its edits undone (`as_the_client_sent_it`); TCP, UDP, DNS
    flows are passed over. RecordingError names the file and the flow that cannot be read."""
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e.strerror or e}") from None
    with file:
        number = 0
        while True:
            number += 1
            where = f"{path}: flow {number}"
            try:
                state = _next_flow(file)
            except Truncated as e:
                raise RecordingError(f"{where}: truncated ({e})") from None
            except (ValueError, TypeError, IndexError, KeyError) as e:
                raise RecordingError(f"{where}: not a mitmproxy flow file ({e})") from None
            if state is None:
                return
            if state.get("type") != "http":
                logger.debug("%s: a %s flow, not HTTP: passed over", where, state.get("type"))
                continue
            yield _request(state, where)


def _next_flow(file: BinaryIO) -> dict[str, Any] | None:
    data = _flow_bytes(file)
    if data is None:
        return None
    start = data.index(b":") + 1
    if data[-1:] != b"}":
        raise ValueError("a flow is not a dictionary")
    state = _dictionary(data, start, len(data) - 1, WANTED)
    if state.get("version") == version.FLOW_FORMAT_VERSION:
        return state
    # Another format version: the whole flow, migrated by mitmproxy as FlowReader does.
    loaded = tnetstring.loads(data)
    if not isinstance(loaded, dict):
        raise ValueError(f"a flow is a dictionary, not {type(loaded).__name__}")
    return _wanted(compat.migrate_flow(loaded), WANTED)


def _wanted(state: Mapping[Any, Any], spec: Spec) -> dict[str, Any]:
    """The keys of a whole (migrated) flow state that the spec names."""
    found = {}
    for key, inner in spec.items():
        if key in state:
            found[key] = state[key] if inner is None else _wanted(state[key], inner)
    return found


def _request(state: Mapping[str, Any], where: str) -> RecordedRequest:
    try:
        request = state["request"]
        method = _text(request["method"])
        path = _text(request["path"])
        headers = [(_text(name), _text(value)) for name, value in request["headers"]]
        peername = (state.get("client_conn") or {}).get("peername")
        metadata = state.get("metadata") or {}
        client_ip = _text(peername[0]) if peername else None
        identity = _text(state.get("id") or where)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise RecordingError(f"{where}: not an HTTP request flow ({e!r})") from None
    sent = RecordedRequest(where, identity, method, path, tuple(headers), client_ip, False, None)
    return as_the_client_sent_it(sent, metadata)


def _text(value: object) -> str:
    """As mitmproxy's `Headers` and `Request` read their bytes: UTF-8, undecodable bytes kept."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return value
    raise ValueError(f"expected text, found {type(value).__name__}")


# The flow format this reader was written against; a newer mitmproxy may move fields.
KNOWN_FORMAT_VERSION = 21


def check_flow_format(_lean: object = None) -> str | None:
    """The fields read are still where `Flow.get_state()` puts them, in a known format."""
    from mitmproxy.test import tflow  # noqa: PLC0415 - only for the check

    if version.FLOW_FORMAT_VERSION != KNOWN_FORMAT_VERSION:
        return (
            f"flow format version {version.FLOW_FORMAT_VERSION}, not {KNOWN_FORMAT_VERSION}: "
            "check the fields the diff reads"
        )
    state = tflow.tflow().get_state()
    for key, spec in WANTED.items():
        if key not in state:
            return f"a flow's state has no {key!r}"
        if isinstance(spec, Mapping) and key != "metadata":
            missing = [name for name in spec if name not in state[key]]
            if missing:
                return f"a flow's {key!r} has no {', '.join(map(repr, missing))}"
    return None


FLOW_FILE_REACHES = (Reach("flow files read by field name (diff)", check_flow_format),)
