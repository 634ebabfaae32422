"""The runner's access lines written straight to the terminal log: the same text as through
`logging`, and `logging` whenever anything but the terminal log would see the record."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest
from mitmproxy import log
from mitmproxy.addons import termlog
from mitmproxy.test import tflow

from sidecar_dispatcher._mitmproxy.speed import terminal_lines
from sidecar_dispatcher.observe import access_log

MESSAGE = "dev → http://dev:8080 (environment: dev) GET /a%20b?x=%s patched=[Host] 200 3.1ms"
TIME = r"\[\d\d:\d\d:\d\d\.\d\d\d\] "


def alone(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, termlog.TermLogHandler]:
    """A terminal log handler as the runner's master makes it, alone on the root logger (pytest's
    own capturing handlers set aside), writing to a string. Made in the test's body: mitmproxy's
    handlers print only in the test phase that made them."""
    out = io.StringIO()
    handler = termlog.TermLogHandler(out)
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", logging.DEBUG)
    return out, handler


def source() -> logging.Logger:
    return logging.getLogger("sidecar_dispatcher.access_log")


def test_a_line_is_the_text_logging_would_print(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, handler = alone(monkeypatch)
    lines = terminal_lines.TerminalLines(handler, source())
    assert lines(MESSAGE) is True
    source().info(MESSAGE)
    direct, logged = out.getvalue().splitlines()
    assert re.fullmatch(TIME + re.escape(MESSAGE), direct)
    assert direct[14:] == logged[14:]  # the same but for the clock
    assert direct[:9] == logged[:9] or direct[1:3] != logged[1:3]  # same second, bar a tick


def test_the_clock_is_the_local_time_with_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, handler = alone(monkeypatch)
    created = 1_700_000_000_123_456_789  # ns
    monkeypatch.setattr(time, "time_ns", lambda: created)
    assert terminal_lines.TerminalLines(handler, source())("x")
    record = logging.LogRecord("a", logging.INFO, "f", 1, "x", None, None)
    record.created, record.msecs = created / 1e9, 123.0
    assert out.getvalue() == handler.format(record) + "\n"


def other_handler(_handler: termlog.TermLogHandler) -> None:
    logging.getLogger().addHandler(logging.StreamHandler(io.StringIO()))


def quiet_terminal(handler: termlog.TermLogHandler) -> None:
    handler.setLevel(logging.WARNING)


def filtered_logger(_handler: termlog.TermLogHandler) -> None:
    source().addFilter(lambda record: True)


def filtered_handler(handler: termlog.TermLogHandler) -> None:
    handler.addFilter(lambda record: True)


def colours(handler: termlog.TermLogHandler) -> None:
    handler.formatter = log.MitmFormatter(colorize=True)


def date_format(handler: termlog.TermLogHandler) -> None:
    assert handler.formatter is not None
    handler.formatter.datefmt = "%Y"


def not_propagated(_handler: termlog.TermLogHandler) -> None:
    logging.getLogger("sidecar_dispatcher").propagate = False


def detached(_handler: termlog.TermLogHandler) -> None:
    logging.getLogger().handlers = []


@pytest.mark.parametrize(
    "change",
    [
        other_handler,
        quiet_terminal,
        filtered_logger,
        filtered_handler,
        colours,
        date_format,
        not_propagated,
        detached,
    ],
)
def test_logging_takes_the_line_when_anything_else_could_see_it(
    monkeypatch: pytest.MonkeyPatch,
    change: object,
) -> None:
    out, handler = alone(monkeypatch)
    for logger in (source(), logging.getLogger("sidecar_dispatcher")):
        monkeypatch.setattr(logger, "filters", [])
        monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logging.getLogger(), "handlers", list(logging.getLogger().handlers))
    monkeypatch.setattr(handler, "filters", [])
    change(handler)  # type: ignore[operator]
    assert terminal_lines.TerminalLines(handler, source())(MESSAGE) is False
    assert out.getvalue() == ""


def test_another_tests_handler_is_left_to_logging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, handler = alone(monkeypatch)
    monkeypatch.setattr(handler, "_initiated_in_test", "an earlier test")  # its filter says no
    lines = terminal_lines.TerminalLines(handler, source())
    assert lines(MESSAGE) is False
    assert out.getvalue() == ""


def test_the_access_log_writes_through_it_or_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, _handler = alone(monkeypatch)
    said: list[str] = []
    written = access_log.AccessLog()

    def say(line: str) -> bool:
        said.append(line)
        return True

    written.terminal = say
    refused = access_log.AccessLog()
    refused.terminal = lambda line: False
    for addon in (written, refused):
        addon.response(tflow.tflow(resp=True))
    assert len(said) == 1 and said[0].startswith("refused GET /path")
    assert out.getvalue().count("refused GET /path") == 1  # the refused one, through logging


def test_the_reach_holds() -> None:
    assert terminal_lines._check_terminal_log() is None


def test_a_changed_time_format_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log.MitmFormatter, "default_msec_format", "%s,%03d")
    assert terminal_lines._check_terminal_log() == "MitmFormatter's time format changed"


def test_a_changed_emit_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    def emit(self: termlog.TermLogHandler, record: logging.LogRecord) -> None:
        self.file.write(self.format(record))

    monkeypatch.setattr(termlog.TermLogHandler, "emit", emit)
    problem = terminal_lines._check_terminal_log()
    assert problem is not None and "emit no longer has" in problem
