"""The two watcher backends: inotify through ctypes, and polling ``stat``.

Private: :mod:`archangel.pipes.watch` is the interface. A backend is handed
two callbacks by the :class:`~archangel.pipes.watch.Watcher` that owns it:
``deliver(watch, event)`` for each :class:`WatchEvent`, and (inotify only)
``dropped(watch)`` when the kernel ends a watch. It reads a watch's ``path``
and ``is_dir`` and never changes a watch: the Watcher alone does. Both work
on the loop's thread only. The polling backend runs on the bus's
:class:`~archangel.bus.timers.Timer`, with its rule for missed polls.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import errno
import functools
import os
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..bus import timers

if TYPE_CHECKING:
    from .watch import Watch

__all__ = ["Change", "Deliver", "Dropped", "Inotify", "Polling", "WatchEvent", "inotify_available"]


class Change(enum.Flag):
    """What happened. A directory watch names the entry in :attr:`WatchEvent.name`."""

    CREATED = enum.auto()
    """A new entry (with polling, also an entry replaced by another file of the same name)."""
    MODIFIED = enum.auto()
    """Written to or truncated."""
    ATTRIB = enum.auto()
    """Metadata changed (permissions, times, link count)."""
    DELETED = enum.auto()
    """An entry was removed."""
    MOVED_FROM = enum.auto()
    """An entry was renamed away (inotify only; polling reports ``DELETED``)."""
    MOVED_TO = enum.auto()
    """An entry was renamed into place (inotify only; polling reports ``CREATED``)."""
    SELF_DELETED = enum.auto()
    """The watched file or directory itself is gone (with inotify the watch ends)."""
    SELF_MOVED = enum.auto()
    """The watched path itself was renamed (inotify only)."""
    OVERFLOW = enum.auto()
    """Events were lost, so rescan.

    The kernel's queue overflowed, or more than
    :data:`archangel.pipes.watch.MAX_PENDING` events were left unread.
    """


class WatchEvent(NamedTuple):
    """One change seen by a :class:`~archangel.pipes.watch.Watch`."""

    path: str
    """The watched path."""
    name: str
    """The entry's name inside a watched directory; ``""`` for the path itself."""
    change: Change


#: ``deliver(watch, event)``: a backend saw ``event`` on ``watch``.
Deliver = Callable[["Watch", WatchEvent], None]
#: ``dropped(watch)``: the kernel ended ``watch`` (its path was deleted or unmounted).
Dropped = Callable[["Watch"], None]


# -- inotify --------------------------------------------------------------------

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_EXCL_UNLINK = 0x04000000
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)
_CHANGES = (
    (_IN_CREATE, Change.CREATED),
    (_IN_MODIFY, Change.MODIFIED),
    (_IN_ATTRIB, Change.ATTRIB),
    (_IN_DELETE, Change.DELETED),
    (_IN_MOVED_FROM, Change.MOVED_FROM),
    (_IN_MOVED_TO, Change.MOVED_TO),
    (_IN_DELETE_SELF, Change.SELF_DELETED),
    (_IN_MOVE_SELF, Change.SELF_MOVED),
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


@functools.cache
def _change(mask: int) -> Change:
    """The :class:`Change` of an event mask (cached: a busy log makes many events)."""
    change = Change(0)
    for bit, flag in _CHANGES:
        if mask & bit:
            change |= flag
    return change


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def inotify_available() -> bool:
    """True on Linux when the C library offers ``inotify_init1``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(_libc(), "inotify_init1")
    except OSError:
        return False


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}", path)
    return result


class Inotify:
    """One inotify fd; watches sharing an inode share its watch descriptor."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Deliver, dropped: Dropped
    ) -> None:
        libc = _libc()
        flags = os.O_NONBLOCK | os.O_CLOEXEC  # IN_NONBLOCK, IN_CLOEXEC
        self._fd = _check(libc.inotify_init1(flags), "inotify_init1")
        self._loop = loop
        self._deliver = deliver
        self._dropped = dropped
        self._wds: dict[int, list[Watch]] = {}
        self._of: dict[Watch, int] = {}
        loop.add_reader(self._fd, self._read)

    def add(self, watch: Watch) -> None:
        add_watch = _libc().inotify_add_watch
        # IN_EXCL_UNLINK spares a directory watch the writes to its deleted
        # entries; on a file's own watch it would silence the writes a daemon
        # goes on making to its log once rotated and deleted, which tail reads.
        mask = _MASK | _IN_EXCL_UNLINK if watch.is_dir else _MASK
        wd = _check(
            add_watch(self._fd, os.fsencode(watch.path), mask), "inotify_add_watch", watch.path
        )
        self._wds.setdefault(wd, []).append(watch)
        self._of[watch] = wd

    def remove(self, watch: Watch) -> None:
        wd = self._of.pop(watch, None)
        if wd is None:
            return
        watches = self._wds.get(wd)
        if watches is not None and watch in watches:
            watches.remove(watch)
            if not watches:
                del self._wds[wd]
                _libc().inotify_rm_watch(self._fd, wd)  # EINVAL if the kernel dropped it

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._wds.clear()
        self._of.clear()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        offset, size = 0, _HEADER.size
        deliver = self._deliver
        while offset + size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + size : offset + size + length].rstrip(b"\0")
            offset += size + length
            if mask & _IN_Q_OVERFLOW:
                for watch in list(self._of):
                    deliver(watch, WatchEvent(watch.path, "", Change.OVERFLOW))
                continue
            watches = self._wds.get(wd)
            if not watches:
                continue
            name = os.fsdecode(raw)
            change = _change(mask)
            for watch in list(watches):
                if change:
                    deliver(watch, WatchEvent(watch.path, name, change))
                if mask & _IN_IGNORED:  # the kernel ended the watch (deleted, unmounted)
                    self._of.pop(watch, None)
                    self._dropped(watch)
            if mask & _IN_IGNORED:
                self._wds.pop(wd, None)


# -- polling ----------------------------------------------------------------------

_Stat = tuple[int, int, int, int, int]  # ino, dev, size, mtime_ns, ctime_ns
_Snapshot = _Stat | dict[str, _Stat] | None


def _stat(path: str) -> _Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _snapshot(watch: Watch) -> _Snapshot:
    if not watch.is_dir:
        return _stat(watch.path)
    entries: dict[str, _Stat] = {}
    try:
        with os.scandir(watch.path) as scan:
            for entry in scan:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                entries[entry.name] = (
                    st.st_ino,
                    st.st_dev,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                )
    except OSError:
        return None
    return entries


def _compare(old: _Stat, new: _Stat) -> Change:
    if old[:2] != new[:2]:
        return Change.CREATED  # replaced: a new file under the same name
    if old[2:4] != new[2:4]:
        return Change.MODIFIED
    if old[4] != new[4]:
        return Change.ATTRIB
    return Change(0)


class Polling:
    """Compares ``stat`` snapshots of every watch each ``interval`` seconds.

    The polls are a :class:`~archangel.bus.timers.Timer`, running while there
    is a watch: no drift, and a loop that fell behind skips the polls it
    missed instead of bursting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, deliver: Deliver) -> None:
        self._loop = loop
        self._interval = interval
        self._deliver = deliver
        self._snaps: dict[Watch, _Snapshot] = {}
        self._timer: timers.Timer | None = None

    def add(self, watch: Watch) -> None:
        self._snaps[watch] = _snapshot(watch)
        if self._timer is None:
            self._timer = timers.every(self._loop, self._interval, self._tick)

    def remove(self, watch: Watch) -> None:
        self._snaps.pop(watch, None)
        if not self._snaps:
            self._stop()

    def close(self) -> None:
        self._snaps.clear()
        self._stop()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> bool:
        deliver = self._deliver
        for watch, old in list(self._snaps.items()):
            new = _snapshot(watch)
            self._snaps[watch] = new
            for name, change in _diff(old, new):
                deliver(watch, WatchEvent(watch.path, name, change))
        return True  # remove() stops the timer with the last watch


def _diff(old: _Snapshot, new: _Snapshot) -> list[tuple[str, Change]]:
    if old is None or new is None:
        if old is None and new is not None:
            return [("", Change.CREATED)]
        if old is not None and new is None:
            return [("", Change.SELF_DELETED)]
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        changes = [(name, Change.DELETED) for name in old.keys() - new.keys()]
        for name, stat in new.items():
            before = old.get(name)
            change = Change.CREATED if before is None else _compare(before, stat)
            if change:
                changes.append((name, change))
        return changes
    if isinstance(old, tuple) and isinstance(new, tuple):
        change = _compare(old, new)
        return [("", change)] if change else []
    return [("", Change.CREATED)]  # a file became a directory or back
