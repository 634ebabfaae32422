"""Notice when a config file may have changed, without touching the request path.

    watcher = FileWatcher("/app/config/config.yaml", on_change=reload)
    watcher.start(asyncio.get_running_loop())

Three ways a file changes, and what each looks like to inotify in the file's folder:
- a Kubernetes ConfigMap update: `config.yaml -> ..data/config.yaml`, and the kubelet renames a
  new `..data` symlink over the old one (IN_MOVED_TO "..data");
- an editor-style save: a temporary file renamed over the path (IN_MOVED_TO);
- an in-place truncate-and-write: IN_MODIFY while it is written, IN_CLOSE_WRITE at the end.
Only completed changes trigger (closes, renames, deletions, new symlinks), never IN_MODIFY, so a
file still being written is not read. Events are gathered for `settle` seconds, then `on_change`
runs once in the event loop; it decides itself whether the content really changed.

Where inotify is missing (not Linux, or out of watches) the file is polled, and a change is
reported only once it has looked the same for two polls in a row.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import stat
import struct
from collections.abc import Callable

logger = logging.getLogger(__name__)

# <sys/inotify.h>
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_WATCH_MASK = IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name

Fingerprint = tuple[str, int, int, int, int] | None  # realpath, device, inode, size, mtime


def fingerprint(path: str) -> Fingerprint:
    """What identifies the file's current version; None when it does not exist."""
    try:
        info = os.stat(path)
        return (os.path.realpath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        return None


class FileWatcher:
    def __init__(
        self,
        path: str,
        on_change: Callable[[], None],
        *,
        settle: float = 0.25,
        poll_interval: float = 1.0,
        use_inotify: bool = True,
    ) -> None:
        self.path = os.path.abspath(path)
        self.on_change = on_change
        self.settle = settle
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inotify: _Inotify | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._poll_task: asyncio.Task[None] | None = None

    @property
    def method(self) -> str:
        return "inotify" if self._inotify else "polling"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        try:
            if not self.use_inotify:
                raise OSError("not asked for")
            self._inotify = _Inotify()
            self._watch_folders()
            loop.add_reader(self._inotify.fd, self._read_events)
        except OSError as e:
            logger.info(
                "inotify unavailable (%s): polling %s every %ss", e, self.path, self.poll_interval
            )
            if self._inotify:
                self._inotify.close()
            self._inotify = None
            # The starting point is taken now, not when the task first runs: a change made in
            # between would otherwise be taken for the starting point and never reported.
            self._poll_task = loop.create_task(self._poll(fingerprint(self.path)))

    def stop(self) -> None:
        if self._pending:
            self._pending.cancel()
        if self._inotify and self._loop:
            self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        if self._poll_task:
            self._poll_task.cancel()
            self._poll_task = None

    def _watch_folders(self) -> None:
        # The link's folder sees `..data` swaps and renames over the path; the target's folder
        # sees in-place writes to the file the path resolves to (which moves on every swap).
        assert self._inotify is not None
        wanted = {os.path.dirname(self.path), os.path.dirname(os.path.realpath(self.path))}
        self._inotify.watch_only(wanted)

    def _read_events(self) -> None:
        assert self._inotify is not None
        if any(
            self._is_completed_change(folder, name, mask)
            for folder, name, mask in self._inotify.read()
        ):
            self._schedule()

    def _is_completed_change(self, folder: str, name: str, mask: int) -> bool:
        if mask & IN_CREATE:
            # A new regular file may still be being written (its close will follow);
            # a new symlink is complete as soon as it exists.
            try:
                return stat.S_ISLNK(os.lstat(os.path.join(folder, name)).st_mode)
            except OSError:
                return False
        return True

    def _schedule(self) -> None:
        assert self._loop is not None
        if self._pending:
            self._pending.cancel()
        self._pending = self._loop.call_later(self.settle, self._fire)

    def _fire(self) -> None:
        self._pending = None
        if self._inotify:
            try:
                self._watch_folders()  # a swap may have moved the target to a new folder
            except OSError as e:  # e.g. the folder is gone; the folders still watched remain
                logger.warning("cannot watch a folder of %s: %s", self.path, e)
        self.on_change()

    async def _poll(self, start: Fingerprint) -> None:
        reported = previous = start
        while True:
            await asyncio.sleep(self.poll_interval)
            current = fingerprint(self.path)
            if current == previous and current != reported:  # stable for two polls: complete
                reported = current
                self.on_change()
            previous = current


class _Inotify:
    """The few inotify calls we need, through libc (no extra dependency)."""

    def __init__(self) -> None:
        libc_name = ctypes.util.find_library("c") or "libc.so.6"
        self._libc = ctypes.CDLL(libc_name, use_errno=True)
        if not hasattr(self._libc, "inotify_init1"):
            raise OSError("libc has no inotify")
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self._folders: dict[int, str] = {}  # watch descriptor -> folder

    def watch_only(self, folders: set[str]) -> None:
        for descriptor, folder in list(self._folders.items()):
            if folder not in folders:
                self._libc.inotify_rm_watch(self.fd, descriptor)
                del self._folders[descriptor]
        for folder in folders - set(self._folders.values()):
            descriptor = self._libc.inotify_add_watch(
                self.fd, os.fsencode(folder), _WATCH_MASK | IN_ONLYDIR
            )
            if descriptor < 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"cannot watch {folder}: {os.strerror(errno)}")
            self._folders[descriptor] = folder

    def read(self) -> list[tuple[str, str, int]]:
        """Pending events as (folder, entry name, mask)."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            descriptor, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            if descriptor in self._folders:
                events.append((self._folders[descriptor], os.fsdecode(name), mask))
        return events

    def close(self) -> None:
        os.close(self.fd)
