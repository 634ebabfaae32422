"""The options study's prelude switches the runner's shortcuts off, so its row measures that."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.options_study import WITHOUT_SHORTCUTS

pytestmark = pytest.mark.spawns  # a Python process per prelude

REPOSITORY = Path(__file__).resolve().parents[1]

BUILD_AND_REPORT = textwrap.dedent(
    """
    import asyncio, sys
    from sidecar_dispatcher._mitmproxy import fast_hooks, flow_ids, header_lookups
    from sidecar_dispatcher.runner.serve import build_master

    async def build():
        options = ["mode=reverse:http://127.0.0.1:1@1", "dispatcher_config=" + sys.argv[1],
                   "dispatcher_admin=", "dispatcher_watch=false"]
        built = build_master(options, reuse_port=False)
        print(header_lookups.installed(), flow_ids.installed(),
              built.addons.get("dispatcher").access_log.terminal is None,
              fast_hooks._Writes.add.__name__)
        built._legacy_log_events.uninstall()

    asyncio.run(build())
    """
)


def report(prelude: str, config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", f"{prelude}\n{BUILD_AND_REPORT}", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPOSITORY,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]  # after the start-up log


def test_the_prelude_switches_every_shortcut_off(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("key: environment\ndestination: http://127.0.0.1:1\n")
    assert report("", config) == "True True False add"
    assert report(WITHOUT_SHORTCUTS, config) == "False False True write_each"
