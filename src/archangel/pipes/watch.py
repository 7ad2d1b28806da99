"""File and directory watchers: inotify through ctypes, or polling, one interface.

::

    async with Watcher() as watcher:            # inotify when the kernel has it
        watch = watcher.add("/var/log")         # a directory or a file
        async for events in watch:              # lists of WatchEvent
            ...

:class:`Watcher` picks inotify (``inotify_init1`` with ``IN_NONBLOCK |
IN_CLOEXEC``, ``inotify_add_watch``; the fd is read through
``loop.add_reader``) and falls back to polling ``stat`` on the loop's clock
where inotify is missing (or with ``Watcher(polling=True)``);
:attr:`Watcher.inotify` tells which one is in use. Events are coarse and the
same for both: something was created, modified, deleted or moved, under a
name. The two differ where the kernel knows more: an inotify watch on a file
follows the file (its inode) through a rename, a polling watch follows the
path; watch the directory to follow a name, as :func:`archangel.pipes.supplies.tail`
does.

The backends (``_watch_backends``) serve the :class:`Watcher` that made them
through two callbacks it hands them, ``deliver(watch, event)`` and
``dropped(watch)``: the Watcher alone changes a watch's state, and the
backends import this module for type checking only. The polling backend's
polls are a :class:`~archangel.bus.timers.Timer` (no drift; polls the loop
was too busy for are skipped, not bunched).

What this is not: no recursion into subdirectories, no debouncing, no
third-party watcher, and nothing that reads the files.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Sequence
from typing import Protocol

from ..errors import InvalidArgument, WatcherClosed
from ..kernel.holders import park, wake_all
from ._watch_backends import Change, Inotify, Polling, WatchEvent, inotify_available

__all__ = [
    "MAX_PENDING",
    "POLL_INTERVAL",
    "Change",
    "Watch",
    "WatchEvent",
    "Watcher",
    "inotify_available",
    "wait_any",
]

logger = logging.getLogger(__name__)

#: Default seconds between two polls of the polling watcher.
POLL_INTERVAL = 0.25
#: Events a watch keeps unread; past that they collapse into one ``OVERFLOW``.
MAX_PENDING = 4096


class Watch:
    """One watched path; made by :meth:`Watcher.add`.

    Events queue up (up to :data:`MAX_PENDING`) until read with :meth:`wait`
    or ``async for``; each read returns every event pending, as a list.
    """

    __slots__ = ("_events", "_waiters", "_watcher", "closed", "is_dir", "path")

    def __init__(self, watcher: Watcher, path: str, is_dir: bool) -> None:
        self.path = path
        self.is_dir = is_dir
        #: True once the watch has ended (closed, or ended by the kernel when its path went away).
        self.closed = False
        self._watcher = watcher
        self._events: collections.deque[WatchEvent] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        kind = "dir" if self.is_dir else "file"
        state = "closed" if self.closed else "open"
        return f"<Watch {kind} {self.path!r} pending={len(self._events)} [{state}]>"

    def pending(self) -> list[WatchEvent]:
        """The events pending now, without waiting (possibly none)."""
        events = list(self._events)
        self._events.clear()
        return events

    async def wait(self) -> list[WatchEvent]:
        """Wait for at least one event and return all those pending.

        Raises:
            WatcherClosed: The watch (or its watcher) is closed and no event is left.
        """
        while not self._events:
            if self.closed:
                raise WatcherClosed(f"{self!r} is closed: no more events")
            await park((self._waiters,))
        return self.pending()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> list[WatchEvent]:
        try:
            return await self.wait()
        except WatcherClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop watching; a pending :meth:`wait` ends. Idempotent."""
        if not self.closed:
            self._watcher._remove(self)

    def _wake(self) -> None:
        wake_all(self._waiters)


async def wait_any(watches: Sequence[Watch]) -> list[WatchEvent]:
    """Wait until one of ``watches`` has an event or is closed.

    One wait for several watches (a directory and the files inside it, say),
    without a task per watch.

    Returns:
        The events pending on all of them, watch by watch; possibly none,
        when one was closed (check :attr:`Watch.closed`).
    """
    events = [event for watch in watches for event in watch.pending()]
    if events or any(watch.closed for watch in watches):
        return events
    await park(watch._waiters for watch in watches)
    return [event for watch in watches for event in watch.pending()]


class _Backend(Protocol):
    def add(self, watch: Watch) -> None: ...
    def remove(self, watch: Watch) -> None: ...
    def close(self) -> None: ...


class Watcher:
    """Watches files and directories; inotify when available, else polling.

    Args:
        polling: Use the polling watcher even where inotify is available.
        interval: Seconds between polls (the polling watcher only).

    The constructor does no I/O: the inotify fd (or the poll timer) is set up
    by the first :meth:`add`, on the running loop, and released by
    :meth:`close` (or ``async with``). A watcher belongs to one loop.
    """

    def __init__(self, *, polling: bool = False, interval: float = POLL_INTERVAL) -> None:
        if interval <= 0:
            raise InvalidArgument(f"Watcher interval must be > 0, got {interval}")
        self.interval = interval
        #: True while inotify is in use; False for the polling watcher.
        self.inotify = not polling and inotify_available()
        self._backend: _Backend | None = None
        self._watches: set[Watch] = set()
        self._closed = False

    def __repr__(self) -> str:
        how = "inotify" if self.inotify else f"polling every {self.interval}s"
        state = "closed" if self._closed else "open"
        return f"<Watcher {how} watches={len(self._watches)} [{state}]>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def add(self, path: str | os.PathLike[str]) -> Watch:
        """Start watching a file or a directory; returns its :class:`Watch`.

        Must be called with the loop running.

        Raises:
            FileNotFoundError: ``path`` does not exist (watch its directory instead).
            OSError: The kernel refused the watch (e.g. the inotify watch limit).
            WatcherClosed: The watcher is closed.
        """
        if self._closed:
            raise WatcherClosed(f"{self!r} is closed: cannot watch {os.fspath(path)!r}")
        path = os.fspath(path)
        is_dir = os.path.isdir(path)
        if not is_dir:
            os.stat(path)  # FileNotFoundError with the path in the message
        backend = self._backend or self._start()
        watch = Watch(self, path, is_dir)
        backend.add(watch)
        self._watches.add(watch)
        return watch

    def _start(self) -> _Backend:
        loop = asyncio.get_running_loop()
        backend: _Backend
        if self.inotify:
            try:
                backend = Inotify(loop, self._deliver, self._dropped)
            except OSError as exc:
                logger.warning("inotify unavailable (%s); polling every %s s", exc, self.interval)
                self.inotify = False
                backend = Polling(loop, self.interval, self._deliver)
        else:
            backend = Polling(loop, self.interval, self._deliver)
        self._backend = backend
        return backend

    # The backend's two callbacks: the only ways a backend changes a watch.

    def _deliver(self, watch: Watch, event: WatchEvent) -> None:
        """Queue ``event`` on ``watch``; past :data:`MAX_PENDING` they collapse to ``OVERFLOW``."""
        events = watch._events
        if len(events) >= MAX_PENDING:
            events.clear()
            event = WatchEvent(watch.path, "", Change.OVERFLOW)
        events.append(event)
        watch._wake()

    def _dropped(self, watch: Watch) -> None:
        """The kernel ended ``watch`` (its path was deleted or unmounted): it is closed."""
        watch.closed = True
        self._watches.discard(watch)
        watch._wake()

    def _remove(self, watch: Watch) -> None:
        watch.closed = True
        self._watches.discard(watch)
        if self._backend is not None:
            self._backend.remove(watch)
        watch._wake()

    def close(self) -> None:
        """Remove every watch, release the fd (or timer). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for watch in list(self._watches):
            self._remove(watch)
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
