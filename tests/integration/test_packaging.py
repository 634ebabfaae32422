"""The package installs with pip and serves when loaded from Python (example/scripted.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sidecar_dispatcher.testing.loopback import free_port, send, wait_until_accepting

from ..bad_configs import bad_config
from .processes import REPOSITORY, Upstream


def scripted(config: Path, port: int, *more: str) -> list[str]:
    """The command that runs example/scripted.py: the package loaded from Python."""
    script = REPOSITORY / "example" / "scripted.py"
    return [sys.executable, str(script), "--config", str(config), "--port", str(port), *more]


def test_scripted_example_serves_dispatched_traffic(
    config_file: Path, default_upstream: Upstream, dev_upstream: Upstream, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "scripted.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            scripted(config_file, port, "--reverse", default_upstream.url),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )
    try:
        wait_until_accepting(port, process, "example/scripted.py")
        assert send(port, "GET", "/", [("environment", "dev")]).json()["upstream"] == "dev"
        assert dev_upstream.last().all("dispatched") == ["true"]
        assert send(port, "GET", "/").json()["upstream"] == "default"
    finally:
        process.terminate()
        assert process.wait(10) == 0  # SIGTERM is a clean shutdown


def test_scripted_example_refuses_a_bad_config() -> None:
    bad = bad_config("bad-destination-scheme")
    result = subprocess.run(
        scripted(bad.path, free_port()),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    for expected in bad.located():
        assert expected in result.stderr


def test_pip_install_builds_an_importable_package(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPOSITORY),
        ],
        check=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    probe = (
        "import sidecar_dispatcher, sidecar_dispatcher.config.load as c; "
        "from sidecar_dispatcher import Dispatcher; "
        "print(sidecar_dispatcher.__file__); print(Dispatcher.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module_file, name = result.stdout.split()
    assert module_file.startswith(str(target))
    assert name == "Dispatcher"
    assert (target / "sidecar_dispatcher" / "py.typed").exists()
