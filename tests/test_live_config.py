"""Reloading never stops traffic: reads happen off the event loop, with a deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher.config.file import ConfigFile
from sidecar_dispatcher.config.load import ConfigError, read_config_bytes
from sidecar_dispatcher.core.model import Destination
from sidecar_dispatcher.proxy import live_config as live_config_module

OTHER = "key: environment\ndestination: http://other.test\n"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="expected a regular config file, found a FIFO"):
        read_config_bytes(str(fifo))  # open() would block here until a writer came


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text(OTHER)
    link = tmp_path / "config.yaml"
    link.symlink_to(target)
    assert ConfigFile(str(link)).load().default == Destination("http", "other.test", 80)


async def reloaded(dispatcher: Dispatcher, reason: str = "test") -> None:
    """Ask for a reload the way the watcher and SIGHUP do, and let it finish."""
    dispatcher.config.reload(reason)
    while dispatcher.config._tasks:
        await asyncio.sleep(0.01)


def test_a_fifo_swapped_in_keeps_the_last_good_config_and_the_loop_running(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        dispatcher = Dispatcher()
        with taddons.context(dispatcher) as tctx:
            tctx.configure(dispatcher, dispatcher_config=str(config_path), dispatcher_watch=False)
            good = dispatcher.rules
            config_path.unlink()
            os.mkfifo(config_path)
            with caplog.at_level(logging.ERROR, logger="sidecar_dispatcher"):
                await asyncio.wait_for(reloaded(dispatcher), 2)
            assert dispatcher.rules is good
            assert "found a FIFO" in caplog.text

    asyncio.run(scenario())


def test_a_read_that_hangs_is_given_up_and_not_stacked(
    config_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    real_read = live_config_module._read

    def hanging_read(config_file: ConfigFile, only_if_changed: bool) -> object:
        release.wait(10)  # a network filesystem that does not answer
        return real_read(config_file, only_if_changed)

    monkeypatch.setattr(live_config_module, "READ_DEADLINE", 0.2)

    async def scenario() -> None:
        dispatcher = Dispatcher()
        with taddons.context(dispatcher) as tctx:
            tctx.configure(dispatcher, dispatcher_config=str(config_path), dispatcher_watch=False)
            good = dispatcher.rules
            config_path.write_text(OTHER)
            monkeypatch.setattr(live_config_module, "_read", hanging_read)
            ticks = 0

            async def ticking() -> None:  # the event loop keeps serving meanwhile
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticker = asyncio.create_task(ticking())
            with caplog.at_level(logging.ERROR, logger="sidecar_dispatcher"):
                started = time.monotonic()
                await reloaded(dispatcher)
                assert time.monotonic() - started < 1
                assert "took more than 0.2 s" in caplog.text
                assert dispatcher.rules is good
                await reloaded(dispatcher, "SIGHUP")  # the first read still hangs
                assert "has not returned; not reading it again" in caplog.text
            ticker.cancel()
            assert ticks >= 10
            release.set()
            monkeypatch.setattr(live_config_module, "_read", real_read)
            for _ in range(100):  # the hung thread ends; reads work again
                if not dispatcher.config._reader or not dispatcher.config._reader.is_alive():
                    break
                await asyncio.sleep(0.01)
            await reloaded(dispatcher, "SIGHUP")
            assert dispatcher.rules is not None
            assert dispatcher.rules.default == Destination("http", "other.test", 80)

    asyncio.run(scenario())
