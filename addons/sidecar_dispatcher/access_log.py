"""One line per request, written when it completes: where it went, what the client got, how long.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_access_log=json

`text` (the default) is one readable line through mitmproxy's log, like
`dev → http://dev:8080 (environment: dev) GET /x patched=[Host, X-Forwarded-For] 200 3.1ms`;
`json` is one JSON object per line on standard output, for log shippers; `off` writes nothing.
Header values are never written (a patch may carry a token), only header names; paths are
written without their query string, and client-controlled text is escaped.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from .log_safety import printable
from .outcome import Outcome
from .routing import METADATA_KEY

ACCESS_LOG_OPTION = "dispatcher_access_log"
FORMATS = ("text", "json", "off")
ENVIRONMENT = "SIDECAR_ACCESS_LOG"

logger = logging.getLogger(__name__)


class AccessLog:
    """Writes the access log line of each request in the `response` and `error` hooks."""

    name = "dispatcher-access-log"

    def __init__(self) -> None:
        self.format = "text"
        self._json_handler = StdoutLines()
        self._unknown_environment_value: str | None = None

    def load(self, loader: Loader) -> None:
        default = os.environ.get(ENVIRONMENT, "").strip().lower() or "text"
        if default not in FORMATS:  # refused in configure(): mitmproxy drops errors from load()
            self._unknown_environment_value, default = default, "text"
        loader.add_option(
            name=ACCESS_LOG_OPTION,
            typespec=str,
            default=default,
            choices=FORMATS,
            help="One line per completed request: text (through mitmproxy's log), json (one "
            "object per line on standard output) or off. Defaults to $SIDECAR_ACCESS_LOG, "
            "else text.",
        )

    def configure(self, updated: set[str]) -> None:
        if self._unknown_environment_value is not None:
            value, self._unknown_environment_value = self._unknown_environment_value, None
            raise exceptions.OptionsError(
                f"{ENVIRONMENT}={value!r} is not one of {', '.join(FORMATS)}"
            )
        if ACCESS_LOG_OPTION in updated:
            self.format = ctx.options.dispatcher_access_log
            # JSON lines go straight to stdout: the terminal log's "[time]" prefix would break
            # one-object-per-line parsing.
            logger.propagate = self.format != "json"
            if self.format == "json":
                logger.addHandler(self._json_handler)
                logger.setLevel(logging.INFO)
            else:
                logger.removeHandler(self._json_handler)
                logger.setLevel(logging.NOTSET)

    def done(self) -> None:
        logger.removeHandler(self._json_handler)
        logger.propagate = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:  # else `response` wrote it already
            self._write(flow)

    def _write(self, flow: http.HTTPFlow) -> None:
        if self.format == "off" or not logger.isEnabledFor(logging.INFO):
            return
        outcome = Outcome.of(flow)
        decision = flow.metadata.get(METADATA_KEY)
        patched = list(decision.get("patched", decision["headers_set"])) if decision else []
        if self.format == "json":
            logger.info(json_line(outcome, decision["reason"] if decision else None, patched))
        else:
            logger.info(text_line(outcome, decision["reason"] if decision else None, patched))


class StdoutLines(logging.Handler):
    """Each record's message as one line on the standard output of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(record.getMessage() + "\n")
            sys.stdout.flush()
        except Exception:  # as logging's own handlers: never raise into the request path
            self.handleError(record)


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
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
