"""The admin listener as a mitmproxy addon: option `dispatcher_admin`, bound at start-up.

    mitmdump ... -s addons/dispatcher.py --set dispatcher_admin=127.0.0.1:9901

The address is bound when the option is set, so a bad or busy address refuses the start with
a message naming it. /readyz is 503 until the config is loaded and mitmproxy listens, and again
from the moment the sidecar starts stopping (the runner marks SIGTERM; mitmdump and mitmweb
mark their shutdown), so that Kubernetes stops sending traffic while requests drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from .. import options
from .admin import AdminAddressError, AdminServer, AdminStatus, Readiness, bind_admin_socket
from .metrics import DispatchMetrics
from .request_metrics import ADMIN_OPTION

logger = logging.getLogger(__name__)


class AdminEndpoint:
    name = "dispatcher-admin"

    def __init__(self, metrics: DispatchMetrics, readiness: Readiness) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.server: AdminServer | None = None
        self._address = ""  # as the option gave it
        self._started = False

    def load(self, loader: Loader) -> None:
        options.ADMIN.declare(loader)

    def configure(self, updated: set[str]) -> None:
        if ADMIN_OPTION not in updated:
            return
        address = ctx.options.dispatcher_admin
        if address == self._address:
            return
        new = None
        if address:
            try:
                new = AdminServer(bind_admin_socket(address), self._status())
            except AdminAddressError as e:
                raise exceptions.OptionsError(str(e)) from None
        self._address = address
        self._replace(new)

    def running(self) -> None:
        self.readiness.update(listening=True)
        self._started = True
        if self.server is not None:
            self._start(self.server)

    def done(self) -> None:
        self.readiness.update(draining=True)
        self._address = ""
        self._replace(None)

    def _status(self) -> AdminStatus:
        return AdminStatus(metrics=self.metrics.exposition, ready=lambda: self.readiness.ready)

    def _replace(self, new: AdminServer | None) -> None:
        old, self.server = self.server, new
        if old is not None:
            if _loop_running():
                _spawn(old.stop())
            else:  # never served (configured, but no event loop ran): just release the port
                old.sock.close()
        if new is not None and self._started:
            self._start(new)

    def _start(self, server: AdminServer) -> None:
        _spawn(server.start())
        host, port = server.address
        logger.info("admin listener at %s:%d: /metrics /healthz /readyz", host, port)


_tasks: set[asyncio.Task[None]] = set()  # referenced until done, as asyncio asks


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _spawn(coroutine: Coroutine[None, None, None]) -> None:
    if not _loop_running():  # a test harness calling hooks by hand: nothing can be served
        coroutine.close()
        return
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
