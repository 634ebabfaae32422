"""The file watcher, on real files with a real event loop: completed changes only."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar_dispatcher.config import watch
from sidecar_dispatcher.config.watch import FileWatcher

SETTLE = 0.1


def watch_while(
    path: Path, change: Callable[[], object], *, seconds: float = 1.0, polling: bool = False
) -> list[float]:
    """Run `change` in a thread while watching `path`; return when on_change fired (offsets)."""
    fired: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        watcher = FileWatcher(
            str(path),
            lambda: fired.append(time.monotonic() - start),
            settle=SETTLE,
            poll_interval=0.1,
            use_inotify=not polling,
        )
        watcher.start(loop)
        assert watcher.method == ("polling" if polling else "inotify")
        await loop.run_in_executor(None, change)
        await asyncio.sleep(seconds)
        watcher.stop()

    asyncio.run(main())
    return fired


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder holding config.yaml ("a"), which tmp_path/config.yaml links to."""
    folder = tmp_path / "real"
    folder.mkdir()
    (folder / "config.yaml").write_text("a")
    (tmp_path / "config.yaml").symlink_to(folder / "config.yaml")
    return folder


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_rename_over_the_path_fires_once(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a")

    def save() -> None:
        temporary = tmp_path / ".config.yaml.tmp"
        temporary.write_text("b")
        temporary.rename(path)

    assert len(watch_while(path, save)) == 1


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_slow_in_place_write_fires_only_after_the_close(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("old")
    closed_at: list[float] = []
    start = time.monotonic()

    def write_slowly() -> None:
        with path.open("w") as file:
            for part in ("line one\n", "line two\n", "line three\n"):
                file.write(part)
                file.flush()
                time.sleep(3 * SETTLE)  # pauses longer than the settle time
        closed_at.append(time.monotonic() - start)

    fired = watch_while(path, write_slowly)
    assert len(fired) == 1
    assert fired[0] >= closed_at[0] - 0.05  # never while the file was half-written


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_configmap_data_swap_fires(tmp_path: Path) -> None:
    first = tmp_path / "..2026_01"
    first.mkdir()
    (first / "config.yaml").write_text("a")
    (tmp_path / "..data").symlink_to(first.name)
    path = tmp_path / "config.yaml"
    path.symlink_to("..data/config.yaml")

    def kubelet_update() -> None:
        second = tmp_path / "..2026_02"
        second.mkdir()
        (second / "config.yaml").write_text("b")
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.rename(tmp_path / "..data_tmp", tmp_path / "..data")

    assert len(watch_while(path, kubelet_update)) >= 1
    assert path.read_text() == "b"


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_in_place_write_to_a_symlink_target_elsewhere_fires(
    tmp_path: Path, elsewhere: Path
) -> None:
    path = tmp_path / "config.yaml"
    assert len(watch_while(path, lambda: (elsewhere / "config.yaml").write_text("b"))) == 1


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_deletion_fires(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a")
    assert len(watch_while(path, path.unlink)) == 1


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_unrelated_new_file_being_written_does_not_fire(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a")
    holder: list[object] = []

    def open_without_closing() -> None:
        handle = (tmp_path / "other.txt").open("w")
        handle.write("x")
        handle.flush()
        holder.append(handle)

    assert watch_while(path, open_without_closing, seconds=0.5) == []
    holder[0].close()  # type: ignore[attr-defined]


def test_polling_fallback_reports_a_change_once_it_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a")
    fired = watch_while(path, lambda: path.write_text("bb"), polling=True)
    assert len(fired) == 1


def test_fingerprint_follows_symlinks_and_reports_absence(tmp_path: Path) -> None:
    target = tmp_path / "target.yaml"
    target.write_text("a")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    found = watch.fingerprint(str(link))
    assert found is not None
    assert found[0] == str(target)
    assert watch.fingerprint(str(tmp_path / "absent.yaml")) is None


@pytest.mark.spawns  # inotify's set-up runs /sbin/ldconfig -p (ctypes.util.find_library)
def test_a_target_folder_that_disappears_is_survived(tmp_path: Path, elsewhere: Path) -> None:
    path = tmp_path / "config.yaml"

    def remove_target_folder_then_point_elsewhere() -> None:
        other = tmp_path / "other"
        other.mkdir()
        (other / "config.yaml").write_text("b")
        (tmp_path / "link.tmp").symlink_to(other / "config.yaml")
        os.rename(tmp_path / "link.tmp", path)
        (elsewhere / "config.yaml").unlink()
        elsewhere.rmdir()

    assert len(watch_while(path, remove_target_folder_then_point_elsewhere)) >= 1
