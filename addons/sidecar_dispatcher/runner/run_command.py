"""`sidecar-dispatcher run`: check the config, then serve in this process or supervise workers.

    SIDECAR_CONFIG=config.yaml SIDECAR_PORT=5000 sidecar-dispatcher run [--workers N] [--set k=v]
    sidecar-dispatcher run --workers auto    # one worker per CPU the process may use

This module does not import mitmproxy: a supervisor of N workers only starts, signals and waits
for them (each worker is `python -O -m sidecar_dispatcher run --reuse-port`, which serves with
`serve.serve_until_stopped`). The workers share the listening port with SO_REUSEPORT; the
kernel spreads connections over them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence

from .. import options
from ..config.load import ConfigError, load_config
from ..observe.admin import AdminAddressError, AdminServer, AdminStatus, bind_admin_socket
from .cpu_budget import CpuBudget, cpu_budget
from .workers import WorkerPool, die_with_supervisor

ADMIN_OPTION = options.ADMIN.name
UNUSED_REVERSE_TARGET = "127.0.0.1:9"  # the discard port

logger = logging.getLogger(__name__)


def listen_port() -> int:
    text = os.environ.get(options.PORT_VARIABLE, "").strip() or str(options.DEFAULT_PORT)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{options.PORT_VARIABLE}={text!r} is not a port number (1-65535)")
    return int(text)


def admin_address(arguments: Sequence[str]) -> str:
    """`--set dispatcher_admin=…` if given, else $SIDECAR_ADMIN, else 127.0.0.1:9901; "" is off."""
    explicit = [a.partition("=")[2] for a in arguments if a.startswith(f"{ADMIN_OPTION}=")]
    if explicit:
        return explicit[-1].strip()
    return os.environ.get(options.ADMIN_VARIABLE, options.DEFAULT_ADMIN).strip()


def reverse_mode(config_path: str, port: int) -> str:
    """mitmproxy's mode for the config: its default destination, on `port`.

    The dispatcher chooses every request's destination, so the reverse-mode target only names
    the default; plain http keeps the listener TCP-only (HTTP/3 needs UDP, which SO_REUSEPORT
    workers could not share) while clients may still speak TLS to the sidecar.
    """
    default = load_config(config_path).default
    # Without a default (`unmatched` answers instead) the target is never connected to: the
    # dispatcher sends each request to its route's destination, or answers it.
    authority = default.authority if default is not None else UNUSED_REVERSE_TARGET
    return f"reverse:http://{authority}@{port}"


def run(arguments: Sequence[str], workers: int | None, reuse_port: bool) -> int:
    """The `run` subcommand: check the config, then serve in one process or supervise workers.

    `workers` None is `--workers auto`: one per CPU the process may use (runner/cpu_budget.py); when
    that is one, the process serves itself, as with `--workers 1`.
    """
    # A SIGHUP (reload) that comes while this process starts, re-executes itself and imports
    # mitmproxy would end it: ignored until the serving loop takes it (runner/serve.py) or the
    # supervisor does (workers.py). An ignored signal stays ignored across exec.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config_path = next(
        (a.partition("=")[2] for a in arguments if a.startswith(f"{options.CONFIG.name}=")),
        options.default_config_path(),
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
    admin = admin_address(arguments)
    count, budget = worker_count(workers)
    if count > 1:
        announce(budget)
        return supervise(arguments, count, admin)
    if reuse_port:  # a worker of a supervisor
        die_with_supervisor()
    if not sys.flags.optimize and os.environ.get(options.OPTIMIZE_VARIABLE, "1") != "0":
        reexec_optimized()  # `auto` is resolved again, and announced, by the new program
    announce(budget)
    from .serve import serve_until_stopped  # noqa: PLC0415 - only a serving process needs it

    set_options = [f"mode={mode}", *without_admin(arguments), f"{ADMIN_OPTION}={admin}"]
    return serve_until_stopped(set_options, reuse_port=reuse_port)


def worker_count(workers: int | None) -> tuple[int, CpuBudget | None]:
    """`--workers N` as given; for `auto` (None) the CPU budget's count, with the budget."""
    if workers is not None:
        return workers, None
    budget = cpu_budget()
    return budget.workers, budget


def announce(budget: CpuBudget | None) -> None:
    """Log, at INFO, how many workers `--workers auto` chose and why (nothing for a count).

    Said before mitmproxy's log handler exists (a single worker) or in a supervisor, which
    has none: so on a handler of this logger's own, in the runner's `sidecar-dispatcher:` form.
    SIDECAR_LOGGING_LEVEL above INFO silences it; a bad value is refused later, by the addon.
    """
    if budget is None:
        return
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("sidecar-dispatcher: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # said once, even after mitmproxy's handler joins the root
    name = os.environ.get(options.LOGGING_LEVEL_VARIABLE, "").strip().upper()
    logger.setLevel(logging.getLevelNamesMapping().get(name, logging.INFO))
    logger.info("%s", budget.describe())


def without_admin(arguments: Sequence[str]) -> list[str]:
    """The options without `dispatcher_admin`, which mitmproxy takes once (see admin_address)."""
    return [a for a in arguments if not a.startswith(f"{ADMIN_OPTION}=")]


def reexec_optimized() -> None:
    """Become `python -O -m sidecar_dispatcher …` (same process id, same arguments).

    mitmproxy type-checks every request and response it builds when Python runs without -O
    (`if __debug__:` in mitmproxy/http.py); the benchmark measured -O worth ~1.3x throughput.
    SIDECAR_PYTHON_OPTIMIZE=0 keeps the checks.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-O", "-m", "sidecar_dispatcher", *sys.argv[1:]])


def supervise(arguments: Sequence[str], workers: int, admin: str) -> int:
    """Start `workers` processes on one port and keep them running (see runner/workers.py).

    The supervisor serves the admin listener itself: /metrics sums the workers' metrics, which
    each writes to a shared folder (prometheus-client's multiprocess mode), and /readyz is ready
    while every worker is and no stop signal has come.
    """
    try:
        admin_socket = bind_admin_socket(admin) if admin else None
    except AdminAddressError as e:
        print(f"sidecar-dispatcher: {e}", file=sys.stderr)
        return 1
    metrics_directory = tempfile.mkdtemp(prefix="sidecar-metrics-", dir=writable_folder(arguments))
    try:
        return _supervise(arguments, workers, admin_socket, metrics_directory)
    finally:
        shutil.rmtree(metrics_directory, ignore_errors=True)


def writable_folder(arguments: Sequence[str]) -> str | None:
    """mitmproxy's confdir when one is set (the image's is writable under a read-only root
    filesystem), else None: the system's temporary folder."""
    given = [a.partition("=")[2] for a in arguments if a.startswith("confdir=")]
    if not given or not given[-1]:
        return None
    folder = os.path.expanduser(given[-1])
    os.makedirs(folder, exist_ok=True)
    return folder


def _supervise(
    arguments: Sequence[str], workers: int, admin_socket: object, metrics_directory: str
) -> int:
    command = [sys.executable, "-m", "sidecar_dispatcher", "run", "--reuse-port"]
    if os.environ.get(options.OPTIMIZE_VARIABLE, "1") != "0":
        command.insert(1, "-O")  # see reexec_optimized
    for argument in [*without_admin(arguments), f"{ADMIN_OPTION}="]:  # served by the supervisor
        command += ["--set", argument]
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_directory}
    pool = WorkerPool(
        command,
        workers,
        environment,
        on_exit=lambda pid: mark_dead(pid, metrics_directory),
        grace=options.SHUTDOWN_GRACE + 2,  # each worker drains for SHUTDOWN_GRACE
    )
    if admin_socket is not None:
        serve_admin(admin_socket, pool, metrics_directory)
    return pool.run()


def serve_admin(admin_socket: object, pool: WorkerPool, metrics_directory: str) -> None:
    """The admin listener of a supervisor, from a thread: the workers' sum, their readiness."""
    from ..observe import metrics  # noqa: PLC0415 - prometheus-client only where metrics are served

    def ready() -> bool:
        if pool.stopping or not pool.all_running():
            return False
        return metrics.multiprocess_ready_workers(metrics_directory) == pool.count

    status = AdminStatus(
        metrics=lambda: metrics.multiprocess_exposition(metrics_directory, pool.count),
        ready=ready,
        healthy=pool.all_running,
    )
    assert isinstance(admin_socket, socket.socket)
    AdminServer(admin_socket, status).start_in_thread()


def mark_dead(pid: int, metrics_directory: str) -> None:
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(pid, metrics_directory)
