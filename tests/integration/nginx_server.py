"""A real nginx in the foreground, everything it writes in a temporary directory.

with Nginx("enricher", site_text, workdir, nginx_binary()) as nginx:   # site: one server block
    send(nginx.port, "GET", "/")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Self

from sidecar_dispatcher.testing.loopback import free_port, wait_until_accepting

from .processes import Started, require_program


def replace_once(text: str, old: str, new: str) -> str:
    """Replace a line of an example file; fail loudly if the example no longer has it."""
    assert text.count(old) == 1, f"expected {old!r} once in the example's config"
    return text.replace(old, new)


class Nginx(Started):
    """A real nginx serving one server-block file (a conf.d file, as in the pod)."""

    def __init__(self, name: str, site: str, workdir: Path, binary: Path) -> None:
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "nginx.log"
        self.port = free_port()
        site = replace_once(site, "listen 80;", f"listen 127.0.0.1:{self.port};")
        (workdir / "site.conf").write_text(site)
        temp_paths = "\n".join(
            f"    {kind}_temp_path {workdir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # Root starts workers as `nobody`, who cannot read pytest's private tmp directories.
        user = "user root;" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"""{user}
worker_processes 1;
pid {workdir / "nginx.pid"};
events {{ worker_connections 1024; }}
http {{
    types {{ text/html html; }}
    default_type application/octet-stream;
    access_log {workdir / "access.log"};
{temp_paths}
    include {workdir / "site.conf"};
}}
"""
        )

    def start(self) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "-p",
                    str(self.workdir),
                    "-c",
                    str(self.workdir / "nginx.conf"),
                    "-e",
                    str(self.workdir / "error.log"),
                    "-g",
                    "daemon off;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # master and workers in one group, stopped together
            )
        try:
            wait_until_accepting(self.port, self.process, f"nginx {self.name}")
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{e}:\n{self.logs()}") from None
        return self

    def logs(self) -> str:
        error_log = self.workdir / "error.log"
        errors = error_log.read_text(errors="replace") if error_log.exists() else ""
        return self.log_path.read_text(errors="replace") + errors

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # nginx's fast shutdown
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        with suppress(ProcessLookupError):  # workers left behind by a master that died
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)


def nginx_binary() -> Path:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return require_program(Path(found) if found else None, "nginx (Debian nginx-light)")
