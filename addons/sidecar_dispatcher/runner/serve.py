"""The lean runner: the Dispatcher in a mitmproxy master with only what a reverse proxy needs.

    serve_until_stopped(["mode=reverse:http://127.0.0.1:8081@5000", "listen_host=127.0.0.1"])

Stock mitmdump sends every hook through about 30 default addons (map_remote, save, dumper, …);
this master holds the addons a dispatching reverse proxy uses, so each request visits a handful.
It behaves like `mitmdump --mode reverse:<default>@$SIDECAR_PORT -s addons/dispatcher.py` (the
integration tests run against both). `run_command.run` decides when a process serves.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence

from mitmproxy import exceptions, master, options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyserver,
    save,
    tlsconfig,
    update_alt_svc,
)

from .. import _mitmproxy as internals
from .._mitmproxy import Shortcut
from ..observe import access_log
from ..observe.access_log import BatchedOutput
from ..options import SHUTDOWN_GRACE
from ..proxy.addon import Dispatcher
from ..proxy.live_config import LiveConfig

logger = logging.getLogger(__name__)


def lean_addons() -> list[object]:
    """The addons a dispatching reverse proxy needs, in mitmdump's order."""
    return [
        core.Core(),  # option checks and the core commands
        block.Block(),  # as mitmdump: clients with public addresses refused (block_global)
        disable_h2c.DisableH2C(),  # as mitmdump: refuse h2c upgrades it cannot proxy
        proxyserver.Proxyserver(),  # listening, connections, streaming, timeouts
        next_layer.NextLayer(),  # protocol detection (TLS, HTTP/1, HTTP/2, WebSocket)
        tlsconfig.TlsConfig(),  # certificates for TLS clients, verification of upstreams
        update_alt_svc.UpdateAltSvc(),  # as mitmdump in reverse mode
        errorcheck.ErrorCheck(),  # exit when start-up logged an error
    ]


RECORDING_OPTION = "save_stream_file"  # mitmproxy's `save` addon, loaded when it is set


def recording_addons(set_options: Sequence[str]) -> list[object]:
    """mitmproxy's `save` addon (options `save_stream_file`, `save_stream_filter`) when
    `save_stream_file` is among the options, to record traffic for `sidecar-dispatcher diff`;
    else none, so that nothing runs for it."""
    if any(option.partition("=")[0] == RECORDING_OPTION for option in set_options):
        return [save.Save()]
    return []


def build_master(set_options: Sequence[str], *, reuse_port: bool) -> master.Master:
    """The master with every option applied and the config read; nothing listens yet.

    Raises OptionsError (a bad option or config) or InternalsChanged (see _mitmproxy): the
    internals that correctness depends on changed; those of a speed shortcut cost only that.
    """
    opts = options.Options()
    lean = master.Master(opts, event_loop=asyncio.get_running_loop(), with_termlog=True)
    recording = recording_addons(set_options)
    if recording and reuse_port:  # each worker would open, and interleave flows in, one file
        raise exceptions.OptionsError(
            f"{RECORDING_OPTION} cannot be used with --workers: the workers would write one "
            "file; record on a sidecar with one worker"
        )
    lean.addons.add(*lean_addons(), *recording, Dispatcher())
    if problems := internals.self_check(lean, fixes_only=True):
        raise internals.InternalsChanged(problems)
    # Each speed shortcut whose internals hold; for the others (one warning names them) the
    # runner takes mitmproxy's own path, as mitmdump does.
    usable = internals.usable_shortcuts(lean)
    internals.drop_legacy_log_events(lean)
    # Hooks from a table, synchronous ones inline under the connection's lock: about a third of
    # the runner's CPU per request was mitmproxy's hook dispatch (docs/performance.md).
    if Shortcut.FAST_HOOKS in usable:
        internals.fast_hooks.use_fast_hooks(lean)
    # What else the runner's profile showed of mitmproxy's per-request cost (docs/performance.md):
    # a KeyError per absent header looked up, a getrandom() per flow id, a log record per line.
    if Shortcut.HEADER_LOOKUPS in usable:
        internals.faster_header_lookups()
    if Shortcut.FLOW_IDS in usable:
        internals.pooled_ids()
    dispatcher: Dispatcher = lean.addons.get("dispatcher")
    if Shortcut.TERMINAL_LINES in usable:
        dispatcher.access_log.terminal = internals.direct_terminal_lines(lean, access_log.logger)
    # The client's request is kept with each flow for `diff`; unrecorded, nothing reads it here.
    dispatcher.router.keeps_client_request = bool(recording)
    opts.set(*set_options, defer=True)
    if opts.deferred:
        names = ", ".join(sorted(opts.deferred))
        raise exceptions.OptionsError(
            f"unknown option(s) for the lean runner: {names}. It loads only the addons a "
            "reverse proxy needs; for the others use mitmdump -s addons/dispatcher.py"
        )
    # mitmdump configures its addons as it parses the command line; here, once, with every
    # option, so that the config is loaded and the CA is ready before anything listens.
    internals.configure_all(lean)
    if reuse_port:
        internals.share_listening_port()
    return lean


def configure_logging() -> None:
    """As mitmproxy's own tools do: everything reaches the handlers, which filter by verbosity."""
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("asyncio", "hpack", "quic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # What no handler here prints (the terminal log shows time, client and message), not
    # collected for each record: the logging HOWTO's "Optimization" section.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+
    logging._srcfile = None  # no caller lookup (file, line, function) per record


def serve_until_stopped(set_options: Sequence[str], *, reuse_port: bool) -> int:
    """Serve in this process until SIGTERM/SIGINT; the process's exit status."""
    return asyncio.run(serve(set_options, reuse_port=reuse_port))


async def serve(set_options: Sequence[str], *, reuse_port: bool) -> int:
    configure_logging()
    # The terminal log (made with the master: it takes sys.stdout then) and JSON access log
    # lines, written in one go every FLUSH_DELAY seconds rather than a write or two a line.
    stdout = sys.stdout
    sys.stdout = BatchedOutput(stdout, asyncio.get_running_loop())
    try:
        return await serve_batched(set_options, reuse_port=reuse_port)
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


class HangupsWhileStarting:
    """SIGHUP taken from before anything listens until the config keeper takes it: one reload.

    The keeper (proxy/live_config.py) takes SIGHUP in its `running` hook, which mitmproxy calls
    once the port already listens; until then a HUP would meet Python's default action and end
    the process (status 129). Here the HUPs that come first are counted and answered by one
    reload in `running`, after the keeper's (this addon comes after the Dispatcher), whose own
    handler has replaced this one by then. The config was read while the master was built,
    maybe before the change a HUP announces, and the file watcher sees only later changes.
    One reload, not one each: a read still under way turns the next reload into an error,
    which mitmproxy's errorcheck would take for a failed start.
    """

    name = "sidecar-hangups-while-starting"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.received = 0
        self.config: LiveConfig | None = None  # the keeper, once the master is built
        loop.add_signal_handler(signal.SIGHUP, self.hung_up)

    def hung_up(self) -> None:
        self.received += 1

    def running(self) -> None:
        if self.received and self.config is not None:
            self.config.reload("SIGHUP while starting")


async def serve_batched(set_options: Sequence[str], *, reuse_port: bool) -> int:
    loop = asyncio.get_running_loop()
    hangups = HangupsWhileStarting(loop)
    try:
        lean = build_master(set_options, reuse_port=reuse_port)
    except (exceptions.OptionsError, KeyError, internals.InternalsChanged) as e:
        print(f"sidecar-dispatcher: {e}", file=sys.stderr)
        return 1
    stopping: list[asyncio.Task[None]] = []  # keeps the task referenced until it is done
    dispatcher: Dispatcher = lean.addons.get("dispatcher")
    hangups.config = dispatcher.config
    lean.addons.add(hangups)

    def stop_gracefully() -> None:
        if stopping:  # a second signal: stop now
            lean.shutdown()
        else:
            dispatcher.readiness.update(draining=True)  # /readyz: 503 from this moment
            stopping.append(loop.create_task(drain_then_stop(lean)))

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop_gracefully)
    await lean.run()
    return 0


async def drain_then_stop(lean: master.Master, grace: float = SHUTDOWN_GRACE) -> None:
    """Stop accepting, let open connections finish for up to `grace` seconds, then stop.

    As the Go version did on SIGTERM: requests in flight complete instead of being cut off
    when Kubernetes stops the pod.
    """
    await internals.stop_listening(lean)
    deadline = time.monotonic() + grace
    while internals.open_connections(lean) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if still_open := internals.open_connections(lean):
        logger.info("stopping with %d connections still open after %ss", still_open, grace)
    lean.shutdown()
