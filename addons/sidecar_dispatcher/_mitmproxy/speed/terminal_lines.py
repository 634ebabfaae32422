"""Access log lines printed as mitmproxy's terminal log prints an INFO record, without one.

    lines = direct_terminal_lines(master, logging.getLogger("sidecar_dispatcher.access_log"))
    if lines is None or not lines(message):   # False: logging's path must take it
        logger.info(message)

A text access line through `logging` is a LogRecord, two handlers' locks and filters, a
Formatter and two writes: about 7 % of the runner's samples per request
(bench/results/profile.md). When the only handler that would print an INFO record of that logger
is the master's terminal log (the runner's case), the line is written straight to the terminal
log's stream in its format, `[HH:MM:SS.mmm] message`. Whenever anything else could see the
record — another handler (a test's, a user's), a filter, a colourising terminal, a date format —
the call says False and the caller logs as before: nobody loses a line.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from mitmproxy import log, master
from mitmproxy.addons import termlog

from ..checking import Reach, Shortcut, first_problem, sources_lack

_INFO = logging.INFO
_TEST = "PYTEST_CURRENT_TEST"  # MitmLogHandler.filter compares it with its creation's


class TerminalLines:
    """Writes a message as the terminal log handler would print its INFO record."""

    def __init__(self, handler: termlog.TermLogHandler, source: logging.Logger) -> None:
        self.handler = handler
        self.source = source
        # MitmLogHandler.filter prints a record only in the pytest phase that made the handler.
        self._created_in_test: str | None = getattr(handler, "_initiated_in_test", None)
        self._stamp = (-1, "")  # (second, "HH:MM:SS"): strftime once a second

    def __call__(self, message: str) -> bool:
        if not self._only_printer():
            return False
        now = time.time_ns()
        second = now // 1_000_000_000
        if self._stamp[0] != second:
            self._stamp = (second, time.strftime("%H:%M:%S", time.localtime(second)))
        line = f"[{self._stamp[1]}.{now % 1_000_000_000 // 1_000_000:03d}] {message}\n"
        try:
            self.handler.file.write(line)
        except OSError:
            sys.exit(1)  # as TermLogHandler.emit: we cannot print (mitmproxy #4669)
        return True

    def _only_printer(self) -> bool:
        """Is the handler, as mitmproxy made it, the one thing an INFO record here reaches?"""
        handler = self.handler
        formatter = handler.formatter
        if (
            handler.level > _INFO
            or handler.filters
            or type(formatter) is not log.MitmFormatter
            or formatter.colorize
            or formatter.datefmt is not None
            or (self._created_in_test and os.environ.get(_TEST) != self._created_in_test)
        ):
            return False
        reached = False
        logger: logging.Logger | None = self.source
        while logger is not None:  # as Logger.callHandlers walks
            if logger.filters or logger.disabled:
                return False
            for other in logger.handlers:
                if other is handler:
                    reached = True
                elif other.level <= _INFO:
                    return False
            if not logger.propagate:
                break
            logger = logger.parent
        return reached


def direct_terminal_lines(
    lean: master.Master, source: logging.Logger
) -> Callable[[str], bool] | None:
    """The direct writer for `source`'s INFO lines, if the master has a terminal log."""
    addon = lean.addons.get("termlog")
    handler = getattr(addon, "logger", None)
    if not isinstance(handler, termlog.TermLogHandler):
        return None
    return TerminalLines(handler, source)


# What the line reproduces: the terminal log prints `self.format(record)` (a line) to its file;
# the format is "[time] message" without client, time "%H:%M:%S" with ".%03d" milliseconds;
# MitmLogHandler's filter compares the test of the moment with the one it was made in.
STOCK_FORMAT = (
    (termlog.TermLogHandler, "emit", ("print(self.format(record), file=self.file)", "sys.exit(1)")),
    (log.MitmFormatter, "__init__", ('time = "[%s]"', 'self.without_client = f"{time} %s"')),
    (
        log.MitmFormatter,
        "format",
        (
            "time = self.formatTime(record)",
            "message = record.getMessage()",
            "return self.without_client % (time, message)",
        ),
    ),
    (
        log.MitmLogHandler,
        "__init__",
        ('self._initiated_in_test = os.environ.get("PYTEST_CURRENT_TEST")',),
    ),
    (
        log.MitmLogHandler,
        "filter",
        (
            "super().filter(record)",
            'self._initiated_in_test == os.environ.get("PYTEST_CURRENT_TEST")',
        ),
    ),
)


def _check_terminal_log(_lean: object = None) -> str | None:
    formatter = log.MitmFormatter
    return first_problem(
        lambda: (
            None
            if (formatter.default_time_format, formatter.default_msec_format)
            == ("%H:%M:%S", "%s.%03d")
            else "MitmFormatter's time format changed"
        ),
        lambda: (
            None
            if termlog.TermLog.__name__.lower() == "termlog"
            else "the terminal log addon is no longer named termlog"
        ),
        lambda: sources_lack(STOCK_FORMAT),
    )


TERMINAL_LINE_REACHES = (
    Reach(
        "TermLogHandler / MitmFormatter (access lines printed in their format)",
        _check_terminal_log,
        shortcut=Shortcut.TERMINAL_LINES,
    ),
)
