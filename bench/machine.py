"""What the numbers were measured on: CPU, kernel and the versions of every program involved."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from .haproxy import haproxy_binary
from .load import k6_binary, wrk_binary
from .nginx import nginx_binary


def _first_match(pattern: str, text: str, default: str = "unknown") -> str:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1).strip() if match else default


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    return (done.stdout + done.stderr).strip()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def python_build() -> str:
    """Where this CPython comes from and whether it was built with PGO and LTO, which speed up
    pure-Python code: pyenv's default build has neither, the Docker image's python:3.13-slim
    has both. Numbers from the two builds are not comparable."""
    flags = sysconfig.get_config_var("CONFIG_ARGS") or ""
    optimizations = [
        name
        for name, flag in (("PGO", "--enable-optimizations"), ("LTO", "--with-lto"))
        if flag in flags
    ]
    prefix = Path(sys.base_prefix)
    origin = "pyenv" if ".pyenv" in prefix.parts else str(prefix)
    built = f"with {'+'.join(optimizations)}" if optimizations else "without PGO/LTO"
    return f"CPython {platform.python_version()} ({origin}, built {built})"


def haproxy_version() -> str:
    binary = haproxy_binary()
    if binary is None:
        return "not installed"
    return _first_match(r"^HA-?Proxy version (\S+)", _output([str(binary), "-v"]))


def describe() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = Path("/proc/meminfo").read_text()
    memory_kb = int(_first_match(r"^MemTotal:\s+(\d+)", meminfo, "0"))
    return {
        "cpu": _first_match(r"^model name\s*:(.*)$", cpuinfo),
        "cores": str(os.cpu_count()),
        "cores_usable": ",".join(str(c) for c in sorted(os.sched_getaffinity(0))),
        "memory": f"{memory_kb / 2**20:.0f} GiB",
        "kernel": platform.release(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "python_build": python_build(),
        "mitmproxy": _version("mitmproxy"),
        "nginx": _first_match(r"nginx version: nginx/(\S+)", _output([str(nginx_binary()), "-v"])),
        "haproxy": haproxy_version(),
        "wrk": _first_match(r"^wrk (\S+)", _output([wrk_binary(), "-v"])),
        "k6": _first_match(r"^k6 (v\S+)", _output([k6_binary(), "version"])),
        "executable": sys.executable,
    }


def describe_markdown(machine: dict[str, str]) -> str:
    python = machine.get("python_build") or f"Python {machine['python']}"
    haproxy = f", HAProxy {machine['haproxy']}" if "haproxy" in machine else ""
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory']}; "
        f"Linux {machine['kernel']}; {python}, "
        f"mitmproxy {machine['mitmproxy']}, nginx {machine['nginx']}{haproxy}, "
        f"wrk {machine['wrk']}, k6 {machine['k6']}; load average at start "
        f"{machine['load_average']}"
    )
