"""A recorded request, and what the router keeps so that `diff` can see it as the client sent it.

    record = client_request_record(decision, path, headers, keep_host=False)   # the router
    request = as_the_client_sent_it(sent, flow_metadata)                        # a flow file

The dispatcher edits a request in place when it dispatches it (path, Host, X-Forwarded-For,
patches), so a flow written by `mitmdump -w` or the `save_stream_file` option holds the request
*as sent upstream*. To let a diff resolve it again, the router records, with the decision, what
the edits overwrote (`client_request_record`): the client's path and the client's values of just
the headers the decision edits. `client_request` puts them back. Nothing here imports mitmproxy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .decision import METADATA_KEY, Decision
from .log_safety import printable
from .resolve import HeaderLookup

CLIENT_REQUEST_KEY = "client_request"  # in flow.metadata[METADATA_KEY]: client_request_record()

Fields = tuple[tuple[str, str], ...]


class RecordingError(ValueError):
    """A file, or a request in it, that cannot be read; the message names the file and where."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as its client sent it, and the decision recorded for it, if any."""

    where: str  # for messages: `traffic.flows: flow 12 (GET /x)`
    identity: str  # the same for the same request in every run: the flow's id, or file and entry
    method: str
    path: str  # path and query
    headers: Fields  # in order
    client_ip: str | None  # None: unknown (a HAR file)
    keep_host: bool  # whether the sidecar kept the client's Host (mitmproxy's keep_host_header)
    decision: Mapping[str, Any] | None  # Decision.as_metadata() as recorded, or None


def client_request_record(
    decision: Decision, path: str, headers: HeaderLookup, *, keep_host: bool
) -> dict[str, object]:
    """What the decision's edits will overwrite, taken before they are applied: the path and
    the values of each header the decision edits (an empty list: the header was absent)."""
    originals: dict[str, list[str]] = {}
    seen: set[str] = set()
    for edit in decision.headers:
        if (lower := edit.name.lower()) not in seen:
            seen.add(lower)
            originals[edit.name] = list(headers.get_all(edit.name))
    return {"path": path, "headers": originals, "keep_host": keep_host}


def client_request(
    sent_path: str, sent_headers: Sequence[tuple[str, str]], record: object, where: str
) -> tuple[str, Fields, bool]:
    """The client's path, headers and keep_host setting, from the request as sent upstream and
    the record the router kept; RecordingError when the record is not one."""
    if not isinstance(record, Mapping):
        raise RecordingError(
            f"{where}: the decision was recorded without the client's request (by a sidecar "
            "older than `diff`): the request as sent upstream cannot be resolved again; "
            "record the traffic again with this version"
        )
    path, originals = record.get("path", sent_path), record.get("headers", {})
    if not isinstance(path, str) or not isinstance(originals, Mapping):
        raise RecordingError(f"{where}: the recorded client request is malformed")
    edited = {str(name).lower() for name in originals}
    fields = [(name, value) for name, value in sent_headers if name.lower() not in edited]
    for name, values in originals.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise RecordingError(f"{where}: the recorded client request is malformed ({name})")
        fields += [(str(name), value) for value in values]
    return path, tuple(fields), bool(record.get("keep_host", False))


def as_the_client_sent_it(sent: RecordedRequest, metadata: Mapping[str, Any]) -> RecordedRequest:
    """A flow's request (`sent`, as the flow holds it) with the dispatcher's edits undone and
    its decision attached; unchanged when the flow carries no decision."""
    where = sent.where  # the file and the flow
    decision = metadata.get(METADATA_KEY)
    if decision is None:  # not dispatched (refused, failed, or recorded without the sidecar)
        return replace(sent, where=f"{where} ({sent.method} {without_query(sent.path)})")
    if not isinstance(decision, Mapping):
        raise RecordingError(f"{where}: the recorded decision is malformed")
    record = decision.get(CLIENT_REQUEST_KEY)
    path, headers, keep_host = client_request(sent.path, sent.headers, record, where)
    return replace(
        sent,
        where=f"{where} ({sent.method} {without_query(path)})",
        path=path,
        headers=headers,
        keep_host=keep_host,
        decision=decision,
    )


def without_query(path: str) -> str:
    """A path as messages and reports show it: without its query (which may carry tokens),
    escaped and cut as a log line's client-controlled text."""
    return printable(path.partition("?")[0])
