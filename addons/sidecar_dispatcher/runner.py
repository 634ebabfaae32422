"""`sidecar-dispatcher run`: the Dispatcher in a master with only what a reverse proxy needs.

    SIDECAR_CONFIG=config.yaml SIDECAR_PORT=5000 sidecar-dispatcher run [--workers N] [--set k=v]

Stock mitmdump sends every hook through about 30 default addons (map_remote, save, dumper, …);
this master holds the addons a dispatching reverse proxy uses, so each request visits a handful.
It behaves like `mitmdump --mode reverse:<default>@$SIDECAR_PORT -s addons/dispatcher.py` (the
integration tests run against both). `--workers N` starts N such processes sharing the
listening port with SO_REUSEPORT; the kernel spreads connections over them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from mitmproxy import exceptions, hooks, master, options
from mitmproxy.addons import (
    core,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyserver,
    tlsconfig,
    update_alt_svc,
)
from mitmproxy.proxy import mode_servers

from .addon import Dispatcher
from .config import ConfigError, default_config_path, load_config

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5000
SHUTDOWN_GRACE = 5.0  # seconds open connections get to finish on SIGTERM, as in the Go version

# Defaults chosen from the benchmark (bench/README.md): they cost throughput and buy nothing
# for a sidecar whose upstreams are known.
RUNNER_DEFAULTS = {
    "connection_strategy": "lazy",
}


def lean_addons() -> list[object]:
    """The addons a dispatching reverse proxy needs, in mitmdump's order."""
    return [
        core.Core(),  # option checks and the core commands
        disable_h2c.DisableH2C(),  # as mitmdump: refuse h2c upgrades it cannot proxy
        proxyserver.Proxyserver(),  # listening, connections, streaming, timeouts
        next_layer.NextLayer(),  # protocol detection (TLS, HTTP/1, HTTP/2, WebSocket)
        tlsconfig.TlsConfig(),  # certificates for TLS clients, verification of upstreams
        update_alt_svc.UpdateAltSvc(),  # as mitmdump in reverse mode
        errorcheck.ErrorCheck(),  # exit when start-up logged an error
    ]


def listen_port() -> int:
    text = os.environ.get("SIDECAR_PORT", "").strip() or str(DEFAULT_PORT)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"SIDECAR_PORT={text!r} is not a port number (1-65535)")
    return int(text)


def reverse_mode(config_path: str, port: int) -> str:
    """mitmproxy's mode for the config: its default destination, on `port`.

    The dispatcher chooses every request's destination, so the reverse-mode target only names
    the default; plain http keeps the listener TCP-only (HTTP/3 needs UDP, which SO_REUSEPORT
    workers could not share) while clients may still speak TLS to the sidecar.
    """
    default = load_config(config_path).default
    return f"reverse:http://{default.authority}@{port}"


def build_master(set_options: Sequence[str], *, reuse_port: bool) -> master.Master:
    opts = options.Options()
    loop = asyncio.get_running_loop()
    lean = master.Master(opts, event_loop=loop, with_termlog=True)
    # Every log record would also become a deprecated `add_log` event sent through all addons;
    # none of these addons listens for it (bench/: ~2 % of throughput).
    lean._legacy_log_events.uninstall()
    lean.addons.add(*lean_addons(), Dispatcher())
    opts.update(**RUNNER_DEFAULTS)
    opts.set(*set_options, defer=True)
    if opts.deferred:
        names = ", ".join(sorted(opts.deferred))
        raise exceptions.OptionsError(
            f"unknown option(s) for the lean runner: {names}. It loads only the addons a "
            "reverse proxy needs; for the others use mitmdump -s addons/dispatcher.py"
        )
    # mitmdump configures its addons as it parses the command line; here, once, with every
    # option, so that the config is loaded and the CA is ready before anything listens.
    lean.addons.trigger(hooks.ConfigureHook(set(opts.keys())))
    if reuse_port:
        share_listening_port()
    return lean


def share_listening_port() -> None:
    """Make reverse-mode listeners bind with SO_REUSEPORT, so that workers share the port.

    mitmproxy creates its TCP listener with a plain `asyncio.start_server`; this swaps in the
    same call with `reuse_port=True` for reverse mode only, in this process only.
    """

    async def listen(self: mode_servers.ReverseInstance, host: str, port: int) -> list[object]:
        if self.mode.transport_protocol != "tcp":
            raise OSError(f"--workers needs a TCP listener, not {self.mode.transport_protocol}")
        server = await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True)
        return [server]

    mode_servers.ReverseInstance.listen = listen  # type: ignore[method-assign,assignment]


def configure_logging() -> None:
    """As mitmproxy's own tools do: everything reaches the handlers, which filter by verbosity."""
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("asyncio", "hpack", "quic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve(set_options: Sequence[str], *, reuse_port: bool) -> int:
    configure_logging()
    try:
        lean = build_master(set_options, reuse_port=reuse_port)
    except (exceptions.OptionsError, KeyError) as e:
        print(f"sidecar-dispatcher: {e}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []  # keeps the task referenced until it is done

    def stop_gracefully() -> None:
        if stopping:  # a second signal: stop now
            lean.shutdown()
        else:
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
    proxy = lean.addons.get("proxyserver")
    await proxy.servers.update([])  # close the listening sockets
    deadline = time.monotonic() + grace
    while proxy.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if proxy.connections:
        logger.info(
            "stopping with %d connections still open after %ss", len(proxy.connections), grace
        )
    lean.shutdown()


def run(arguments: Sequence[str], workers: int, reuse_port: bool) -> int:
    """The `run` subcommand: check the config, then serve in one process or supervise workers."""
    config_path = next(
        (a.partition("=")[2] for a in arguments if a.startswith("dispatcher_config=")),
        default_config_path(),
    )
    try:
        port = listen_port()
        mode = reverse_mode(config_path, port)
    except ConfigError as e:  # refused before anything listens
        print(f"Invalid dispatcher config:\n{e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"sidecar-dispatcher: {e}", file=sys.stderr)
        return 1
    set_options = [f"mode={mode}", *arguments]
    if workers > 1:
        return supervise(arguments, workers)
    if not sys.flags.optimize and os.environ.get("SIDECAR_PYTHON_OPTIMIZE", "1") != "0":
        reexec_optimized()
    return asyncio.run(serve(set_options, reuse_port=reuse_port))


def reexec_optimized() -> None:
    """Become `python -O -m sidecar_dispatcher …` (same process id, same arguments).

    mitmproxy type-checks every request and response it builds when Python runs without -O
    (`if __debug__:` in mitmproxy/http.py); the benchmark measured -O worth ~1.3x throughput.
    SIDECAR_PYTHON_OPTIMIZE=0 keeps the checks.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-O", "-m", "sidecar_dispatcher", *sys.argv[1:]])


def supervise(arguments: Sequence[str], workers: int) -> int:
    """Start `workers` processes on one port; stop them all when one stops or on a signal."""
    command = [sys.executable, "-m", "sidecar_dispatcher", "run", "--reuse-port"]
    if os.environ.get("SIDECAR_PYTHON_OPTIMIZE", "1") != "0":
        command.insert(1, "-O")  # see reexec_optimized
    for argument in arguments:
        command += ["--set", argument]
    children = [subprocess.Popen(command, stdin=subprocess.DEVNULL) for _ in range(workers)]
    stopping = False

    def forward(number: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = stopping or number != signal.SIGHUP
        for child in children:
            if child.poll() is None:
                child.send_signal(number)

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, forward)
    print(f"sidecar-dispatcher: {workers} workers, pids {[c.pid for c in children]}", flush=True)
    code = 0
    while all(child.poll() is None for child in children):
        time.sleep(0.2)
    if not stopping:  # a worker died by itself: take the others down, report its status
        code = next(c.returncode for c in children if c.returncode is not None) or 1
        print(f"sidecar-dispatcher: a worker exited with {code}; stopping all", file=sys.stderr)
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + SHUTDOWN_GRACE + 2  # each worker drains for SHUTDOWN_GRACE
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return code
