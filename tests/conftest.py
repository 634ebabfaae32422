from __future__ import annotations

import contextlib
import io
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mitmproxy import connection, flow, hooks, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher.tools.cli import main

from . import flows

WriteConfig = Callable[[str], Path]


@pytest.fixture(autouse=True)
def mitmproxy_as_shipped() -> Iterator[None]:
    """Undo what building a lean runner replaces in the whole process (header look-ups, flow
    ids: _mitmproxy), so that each test starts with mitmproxy's own."""
    headers = {name: http.Headers.__dict__.get(name) for name in ("get", "__contains__")}
    uuids = (flow.uuid, connection.uuid)  # type: ignore[attr-defined]
    yield
    for name, own in headers.items():
        if own is None:
            if name in http.Headers.__dict__:
                delattr(http.Headers, name)
        else:
            setattr(http.Headers, name, own)
    flow.uuid, connection.uuid = uuids  # type: ignore[attr-defined]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_command(
    *arguments: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Result:
    """`sidecar-dispatcher ARGUMENTS` in this process (fast, and measured by coverage), as a user
    would call it: without $SIDECAR_CONFIG unless `env` sets it."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SIDECAR_CONFIG", raising=False)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        if cwd is not None:
            patch.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(arguments)
            except SystemExit as exited:
                code = int(exited.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write dedented YAML text to a fresh file and return its path."""
    counter = iter(range(1_000))

    def write(text: str) -> Path:
        path = tmp_path / f"config-{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


# --- the dispatcher in mitmproxy's test harness (tests/flows.py)


@pytest.fixture
def config_path(write_config: WriteConfig) -> Path:
    """The shared seed-shaped config with fake hosts, as a file."""
    return write_config(flows.CONFIG)


@pytest.fixture
def harness(config_path: Path) -> Iterator[flows.Harness]:
    """A Dispatcher configured with `config_path`, in mitmproxy's test harness."""
    dispatcher = Dispatcher()
    with taddons.context(Proxyserver(), dispatcher) as tctx:
        tctx.configure(dispatcher, dispatcher_config=str(config_path))
        harness = flows.Harness(tctx, dispatcher)
        yield harness
        harness.hook(hooks.DoneHook())  # releases what the addons hold (the admin socket)
