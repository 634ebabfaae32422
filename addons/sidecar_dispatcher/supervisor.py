"""`sidecar-dispatcher run`: check the config, then serve in this process or supervise workers.

    SIDECAR_CONFIG=config.yaml SIDECAR_PORT=5000 sidecar-dispatcher run [--workers N] [--set k=v]

This module does not import mitmproxy: a supervisor of N workers only starts, signals and waits
for them (each worker is `python -O -m sidecar_dispatcher run --reuse-port`, which serves with
`runner.serve_until_stopped`). The workers share the listening port with SO_REUSEPORT; the
kernel spreads connections over them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from .config import ConfigError, default_config_path, load_config

DEFAULT_PORT = 5000
SHUTDOWN_GRACE = 5.0  # seconds open connections get to finish on SIGTERM, as in the Go version


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
    if workers > 1:
        return supervise(arguments, workers)
    if not sys.flags.optimize and os.environ.get("SIDECAR_PYTHON_OPTIMIZE", "1") != "0":
        reexec_optimized()
    from .runner import serve_until_stopped  # noqa: PLC0415 - only a serving process needs it

    return serve_until_stopped([f"mode={mode}", *arguments], reuse_port=reuse_port)


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
