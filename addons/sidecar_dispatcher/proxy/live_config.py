"""The rules in force, read from the config file and kept current while the sidecar runs.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_config=/app/config/config.yaml

`LiveConfig` is the only writer of the rules: it reads the file when the option is set (an
invalid file is refused with OptionsError, and mitmproxy keeps the option's previous value), and
re-reads it on a file change, on SIGHUP and on the `dispatcher.reload` command (an invalid file
is logged and the last good rules keep serving). Each swap is one assignment, so a request
already dispatched keeps the decision it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from mitmproxy import command, ctx, exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from .. import options
from ..config.file import ConfigFile, ConfigFileMissing
from ..config.load import ConfigError
from ..config.watch import FileWatcher
from ..core.model import RuleSet

logger = logging.getLogger(__name__)

CONFIG_OPTION = options.CONFIG.name
READ_DEADLINE = 5.0  # seconds a reload may take to read the file before it is given up

ReadOutcome = RuleSet | ConfigError | None  # new rules, why not, or nothing new
WATCH_OPTION = options.WATCH.name


def _read(config_file: ConfigFile, only_if_changed: bool) -> ReadOutcome:
    """Read the file (on any thread); a ConfigError is returned, not raised."""
    try:
        return config_file.changed() if only_if_changed else config_file.load()
    except ConfigError as e:
        return e


def _settle(done: asyncio.Future[ReadOutcome], outcome: ReadOutcome) -> None:
    if not done.done():  # given up on already: the outcome comes too late to apply
        done.set_result(outcome)


class ConfigListener(Protocol):
    """Told of every config read: applied (the new rules are in force) or rejected."""

    def config_applied(self, rule_set: RuleSet) -> None: ...

    def config_rejected(self) -> None: ...


class LiveConfig:
    """Owns the config file, its watcher and the `RuleSet` read from it."""

    name = "dispatcher-config"

    def __init__(self, listeners: Sequence[ConfigListener] = ()) -> None:
        self.listeners = tuple(listeners)
        self.rules: RuleSet | None = None
        self._reader: threading.Thread | None = None  # the last off-loop read
        self._tasks: set[asyncio.Task[None]] = set()
        self.file: ConfigFile | None = None
        self.watcher: FileWatcher | None = None

    def load(self, loader: Loader) -> None:
        options.CONFIG.declare(loader, default=options.default_config_path())
        options.WATCH.declare(loader)

    def configure(self, updated: set[str]) -> None:
        if CONFIG_OPTION in updated:
            self._read_or_refuse(ctx.options.dispatcher_config)
        if updated & {CONFIG_OPTION, WATCH_OPTION}:
            self._restart_watcher()

    def running(self) -> None:
        if self.rules is None:
            # mitmdump, mitmweb and the runner configure every option at start-up; a master
            # built by hand may never set this one. Send it the same event, so that the config
            # is read (or refused, stopping the start) the same way everywhere.
            ctx.options.update(**{CONFIG_OPTION: ctx.options.dispatcher_config})
        self._explain_reverse_target()
        if self.watcher is None:  # configure() starts it when a loop already runs
            self._restart_watcher()
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        except (RuntimeError, NotImplementedError, ValueError):  # no loop, or not main thread
            logger.debug("SIGHUP reloading unavailable here")

    def done(self) -> None:
        if self.watcher:
            self.watcher.stop()
            self.watcher = None
        with contextlib.suppress(RuntimeError, NotImplementedError, ValueError):
            if asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP):
                # Not the default action (exit 129) while the process stops: a late HUP is moot.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

    @command.command("dispatcher.reload")
    def reload_command(self) -> None:
        """Re-read the dispatcher config file now; an invalid file keeps the rules in force."""
        self.reload("reload requested")

    def reload(self, reason: str, *, only_if_changed: bool = False) -> None:
        """Read the config file again and swap its rules in; never raises.

        A missing or invalid file is logged and the last good rules keep serving. With
        `only_if_changed` (file events), content already seen is not applied or reported again.
        While the event loop runs, the file is read on a thread of its own with a deadline, so
        that a FIFO or a hung network filesystem cannot stop traffic.
        """
        if self.file is None:
            return
        read = functools.partial(_read, self.file, only_if_changed)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a test, a script): read here and now
            self._apply(reason, read())
            return
        if self._reader is not None and self._reader.is_alive():
            logger.error(
                "%s: the last read of config file %s has not returned; not reading it again "
                "until it does (a hung filesystem?); still serving the last good config",
                reason,
                self.file.path,
            )
            return
        task = loop.create_task(self._reload_off_loop(reason, read))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_off_loop(self, reason: str, read: Callable[[], ReadOutcome]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ReadOutcome] = loop.create_future()

        def run() -> None:
            outcome = read()
            loop.call_soon_threadsafe(_settle, done, outcome)

        # A daemon thread, not the loop's executor: a read stuck for good must not keep the
        # process from exiting, nor take one of the executor's few threads.
        self._reader = threading.Thread(target=run, name="config-read", daemon=True)
        self._reader.start()
        try:
            outcome = await asyncio.wait_for(asyncio.shield(done), READ_DEADLINE)
        except TimeoutError:
            assert self.file is not None
            logger.error(
                "%s: reading config file %s took more than %g s (a hung filesystem?); "
                "still serving the last good config",
                reason,
                self.file.path,
                READ_DEADLINE,
            )
            self._tell_rejected()
            return
        self._apply(reason, outcome)

    def _apply(self, reason: str, outcome: ReadOutcome) -> None:
        """Swap in what a read found, or report why not (on the event loop)."""
        assert self.file is not None
        path = self.file.path
        if isinstance(outcome, ConfigFileMissing):
            logger.error(
                "%s: config file %s is missing; still serving the last good config", reason, path
            )
            self._tell_rejected()
            return
        if isinstance(outcome, ConfigError):
            logger.error(
                "%s: config file %s is invalid; still serving the last good config:\n%s",
                reason,
                path,
                outcome,
            )
            self._tell_rejected()
            return
        if outcome is None:
            return
        self.rules = outcome  # one assignment: requests already dispatched keep their decision
        logger.info("dispatcher config %s reloaded (%s): %s", path, reason, outcome.summary())
        self._tell_applied(outcome)

    def _read_or_refuse(self, path: str) -> None:
        """Read `path` as the config now; OptionsError naming file:line:col when invalid."""
        config_file = ConfigFile(path)
        try:
            rules = config_file.load()
        except ConfigError as e:
            self._tell_rejected()
            raise exceptions.OptionsError(f"Invalid dispatcher config:\n{e}") from None
        self.rules, self.file = rules, config_file
        logger.info("dispatcher config %s loaded: %s", path, rules.summary())
        self._tell_applied(rules)

    def _tell_applied(self, rule_set: RuleSet) -> None:
        for listener in self.listeners:
            listener.config_applied(rule_set)

    def _tell_rejected(self) -> None:
        for listener in self.listeners:
            listener.config_rejected()

    def _restart_watcher(self) -> None:
        if self.watcher:
            self.watcher.stop()
            self.watcher = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not running yet: running() starts it
            return
        if self.file and ctx.options.dispatcher_watch:
            self.watcher = FileWatcher(
                self.file.path, lambda: self.reload("file changed", only_if_changed=True)
            )
            self.watcher.start(loop)
            logger.info("watching %s for changes (%s)", self.file.path, self.watcher.method)

    def _explain_reverse_target(self) -> None:
        """Say where traffic goes when the reverse-mode URL and the default destination differ."""
        if self.rules is None or self.rules.default is None:
            return
        default = self.rules.default
        for spec in ctx.options.mode:
            mode = ProxyMode.parse(spec)
            if not isinstance(mode, ReverseMode):
                continue
            # The scheme does not matter: every request gets its destination's scheme.
            if mode.address != (default.host, default.port):
                logger.info(
                    "reverse-mode target %s is not the config's default destination %s: "
                    "requests go where the config says, the reverse-mode target is unused",
                    mode.data,
                    default,
                )
