"""One line per request, written when it completes: where it went, what the client got, how long.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_access_log=json

`text` (the default) is one readable line through mitmproxy's log, like
`dev → http://dev:8080 (environment: dev) GET /x patched=[Host, X-Forwarded-For] 200 3.1ms`;
`json` is one JSON object per line on standard output, for log shippers; `off` writes nothing.
Header values are never written (a patch may carry a token), only header names; paths are
written without their query string, and client-controlled text is escaped.

A JSON line is written straight to standard output (not through `logging`) and flushed at once,
unless standard output is a `BatchedOutput`: the lean runner makes it one, so that its terminal
log and its JSON lines reach the pipe in one write every `FLUSH_DELAY` seconds (or every 64 KiB)
instead of one or two writes per line; a reader sees each line at most that much later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from .. import options
from ..core.log_safety import printable
from .flow_decision import decision_of
from .outcome import Outcome

ACCESS_LOG_OPTION = options.ACCESS_LOG.name
FORMATS = options.ACCESS_LOG_FORMATS
ENVIRONMENT = options.ACCESS_LOG_VARIABLE

# The name operators filter on: kept from before the module moved to observe/
ACCESS_LOGGER = "sidecar_dispatcher.access_log"
logger = logging.getLogger(ACCESS_LOGGER)


class AccessLog:
    """Writes the access log line of each request in the `response` and `error` hooks."""

    name = "dispatcher-access-log"

    def __init__(self) -> None:
        self.format = "text"
        self._unknown_environment_value: str | None = None
        # The lean runner's writer of text lines in the terminal log's format (it says False
        # when logging must take the line); None: every text line is an INFO record.
        self.terminal: Callable[[str], bool] | None = None

    def load(self, loader: Loader) -> None:
        default = os.environ.get(ENVIRONMENT, "").strip().lower() or "text"
        if default not in FORMATS:  # refused in configure(): mitmproxy drops errors from load()
            self._unknown_environment_value, default = default, "text"
        options.ACCESS_LOG.declare(loader, default=default)

    def configure(self, updated: set[str]) -> None:
        if self._unknown_environment_value is not None:
            value, self._unknown_environment_value = self._unknown_environment_value, None
            raise exceptions.OptionsError(
                f"{ENVIRONMENT}={value!r} is not one of {', '.join(FORMATS)}"
            )
        if ACCESS_LOG_OPTION in updated:
            self.format = ctx.options.dispatcher_access_log

    def done(self) -> None:
        sys.stdout.flush()  # a BatchedOutput's last lines

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:  # else `response` wrote it already
            self._write(flow)

    def _write(self, flow: http.HTTPFlow) -> None:
        # JSON lines are written whatever the log level, as a log shipper expects; text lines
        # are INFO records of the terminal log.
        if self.format == "off" or (
            self.format == "text" and not logger.isEnabledFor(logging.INFO)
        ):
            return
        outcome = Outcome.of(flow)
        decision = decision_of(flow)
        reason = decision.reason if decision else None
        patched = list(decision.patched_names) if decision else []
        if self.format == "json":
            write_stdout_line(json_line(outcome, reason, patched))
        else:
            line = text_line(outcome, reason, patched)
            if self.terminal is None or not self.terminal(line):
                logger.info(line)


def write_stdout_line(line: str) -> None:
    """One line on the standard output of the moment, seen by a reader of the pipe at once (or,
    with a BatchedOutput, within FLUSH_DELAY). Not through `logging`: the terminal log's
    "[time]" prefix would break one-object-per-line parsing, and a record costs more."""
    out = sys.stdout
    try:
        out.write(line + "\n")
        if not getattr(out, "flushes_itself", False):
            out.flush()
    except (OSError, ValueError) as e:  # as logging's handlers: never raise into the request
        print(f"access log: cannot write to standard output: {e}", file=sys.stderr)


FLUSH_DELAY = 0.05  # seconds a line may wait in a BatchedOutput
FLUSH_SIZE = 64 * 1024  # characters that make it write at once


class BatchedOutput:
    """A text stream that writes what it gets within FLUSH_DELAY seconds, in one write.

        sys.stdout = BatchedOutput(sys.stdout, asyncio.get_running_loop())   # the runner only

    Under PYTHONUNBUFFERED (the Docker image, the tests) every `print` is one or two write
    calls; at a thousand requests a second that is a thousand log lines. Lines written from the
    event loop's thread wait for a timer of that loop (or FLUSH_SIZE); from any other thread, or
    once the loop is closed, they are written at once, after what waits. Nothing is held longer
    than FLUSH_DELAY, and `flush()` writes everything now. As mitmproxy's terminal log does when
    it cannot print, an OSError on writing exits.
    """

    flushes_itself = True  # write_stdout_line() leaves the flushing to it

    def __init__(self, target: TextIO, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self._loop = loop
        self._thread = threading.get_ident()
        self._pending: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending.append(text)
            self._size += len(text)
            elsewhere = threading.get_ident() != self._thread or self._loop.is_closed()
            if elsewhere or self._size >= FLUSH_SIZE:
                self._write_pending()
            elif self._timer is None:
                self._timer = self._loop.call_later(FLUSH_DELAY, self.flush)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        text = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            if text:
                self.target.write(text)
            self.target.flush()
        except OSError:
            sys.exit(1)  # as mitmproxy's TermLogHandler: we cannot print (mitmproxy #4669)

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:
        return self.target.encoding

    def __getattr__(self, name: str) -> object:  # errors, buffer, closed, …: the stream's own
        return getattr(self.target, name)


_stamp = (0, "")  # (second, its ISO 8601 text): strftime once a second, not once a line


def _now_iso() -> str:
    global _stamp  # noqa: PLW0603  # a one-entry cache
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second)))
    return _stamp[1]


def text_line(outcome: Outcome, reason: str | None, patched: list[str]) -> str:
    where = f"{outcome.rule} → {outcome.destination} ({printable(reason)})" if reason else "refused"
    line = (
        f"{where} {printable(outcome.method)} {printable(outcome.path)} "
        f"patched=[{', '.join(patched)}] {outcome.status} {outcome.duration_seconds * 1000:.1f}ms"
    )
    if outcome.upstream_error_kind:
        line += f" upstream_error={outcome.upstream_error_kind}"
    return line


def json_line(outcome: Outcome, reason: str | None, patched: list[str]) -> str:
    entry: dict[str, object] = {
        "time": _now_iso(),
        "rule": outcome.rule,
        "destination": outcome.destination,
        "reason": printable(reason) if reason is not None else None,
        "method": outcome.method,
        "path": printable(outcome.path, limit=2048),
        "status": outcome.status,
        "duration_ms": round(outcome.duration_seconds * 1000, 3),
        "client": outcome.client,
        "patched": patched,
    }
    if outcome.upstream_error:
        entry["upstream_error"] = outcome.upstream_error
        entry["upstream_error_kind"] = outcome.upstream_error_kind
    return json.dumps(entry, ensure_ascii=False)
