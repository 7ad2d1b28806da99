"""Supplies: where a pipeline's items come from.

A supply is any iterable or async iterable (see :class:`~archangel.Pipeline`).
This module has the usual ones:

* :func:`tail` follows a file the way ``tail -F`` does: appends, truncation,
  rotation, a file that does not exist yet;
* :func:`lines` splits an :class:`asyncio.StreamReader` (or anything with an
  ``async read(n)``) into lines;
* :func:`every` ticks on the loop's clock without drift;
* :func:`line_server` turns each line received on a TCP or Unix socket into an
  item, each connection being a process of its own (see :mod:`archangel.linesrv`).

The line supplies hand a pipeline every line that is ready at once, as a
list (:meth:`LineSupply.batches`); ``async for line in supply`` gives them
one at a time. Lines are ``str`` without their terminator (``encoding=None``
keeps bytes).

What this module is not: it does not parse lines (that is a cog's job) and
does not watch files itself (see :mod:`archangel.watch`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from ._lines import MAX_LINE, LineBuffer, LineSupply
from .errors import WatcherClosed
from .linesrv import LineConnection, LineServer, line_server
from .watch import Change, Watch, Watcher

__all__ = [
    "LineBuffer",
    "LineConnection",
    "LineServer",
    "LineSupply",
    "Lines",
    "Tail",
    "every",
    "line_server",
    "lines",
    "tail",
]

logger = logging.getLogger(__name__)

#: Bytes read at a time.
CHUNK = 1 << 16
#: Bytes :func:`tail` reads before handing lines over and reading on.
READ_AHEAD = 1 << 20
#: Seconds a rotated file is still read after its last append, by default
#: (its writer may append until it reopens its log).
ROTATED_GRACE = 5.0
#: How often a rotated file still read is looked at (its writes wake nobody).
ROTATED_POLL = 0.1
_RELEVANT = Change.OVERFLOW | Change.SELF_DELETED | Change.SELF_MOVED


# -- tail ---------------------------------------------------------------------------


def tail(
    path: str | os.PathLike[str],
    from_start: bool = False,
    watcher: Watcher | None = None,
    *,
    encoding: str | None = "utf-8",
    errors: str = "replace",
    max_line: int = MAX_LINE,
    rotated_grace: float = ROTATED_GRACE,
) -> Tail:
    """Follow the lines appended to a file, like ``tail -F``.

    Args:
        path: The file. Its directory must exist; the file need not: then
            the tail waits for it and reads it from its start.
        from_start: Read the file from its start instead of from its end.
        watcher: The :class:`~archangel.watch.Watcher` to use (shared, not
            closed); by default each iteration makes its own and closes it.
        encoding: How to decode lines; None yields bytes.
        errors: The decoding error handler.
        max_line: The longest partial line held, in bytes.
        rotated_grace: Seconds a rotated file is still read after its
            writer last appended to it.

    Returns:
        A :class:`Tail`: iterate it (or give it to a pipeline) to follow.
    """
    return Tail(
        path,
        from_start,
        watcher,
        encoding=encoding,
        errors=errors,
        max_line=max_line,
        rotated_grace=rotated_grace,
    )


class Tail(LineSupply):
    """Follows a file: made by :func:`tail`.

    Each line appended to the file is an item; a partial last line is held
    until completed. It survives:

    * **truncation** (copy-truncate rotation): when the file becomes shorter
      than the position read, or the byte before that position changes (it
      was truncated and written past it again before the tail looked),
      reading restarts at its start and a partial line held from before is
      dropped. Lines written between the copy and the truncation are lost,
      as with any reader.
    * **rotation** (rename, then a new file): the new file is read from its
      start, and the old one is still read, for the lines its writer appends
      until it reopens its log, until it has been quiet for
      ``rotated_grace`` seconds (5 by default); then its unterminated last
      line, if any, is passed on as a line. While no new file exists the old one
      stays the file followed.
    * **a missing file**: it is waited for, then read from its start.

    Each iteration (``async for``, or a pipeline reading :meth:`batches`)
    follows the file afresh; :attr:`rotations` and :attr:`truncations` count
    across iterations.

    Attributes:
        path: The file followed.
        rotations: How many times a new file replaced the one followed.
        truncations: How many times the file was found truncated.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        from_start: bool = False,
        watcher: Watcher | None = None,
        *,
        encoding: str | None = "utf-8",
        errors: str = "replace",
        max_line: int = MAX_LINE,
        rotated_grace: float = ROTATED_GRACE,
    ) -> None:
        if rotated_grace < 0:
            raise ValueError(f"rotated_grace must be >= 0, got {rotated_grace}")
        self.path = os.path.abspath(os.fspath(path))
        self.from_start = from_start
        self.watcher = watcher
        self.encoding = encoding
        self.errors = errors
        self.max_line = max_line
        self.rotated_grace = rotated_grace
        self.rotations = 0
        self.truncations = 0
        self._watches: set[Watch] = set()

    def __repr__(self) -> str:
        return f"<Tail {self.path!r} rotations={self.rotations} truncations={self.truncations}>"

    def close(self) -> None:
        """End the iterations in progress once they have handed over what they read.

        A pipeline's ``stop`` calls this. A later iteration follows afresh.
        """
        for watch in list(self._watches):
            watch.close()

    async def batches(self) -> AsyncGenerator[list[Any], None]:
        """Follow the file; yields lists of the lines ready (see :class:`Tail`)."""
        watcher = self.watcher if self.watcher is not None else Watcher()
        follower = _Follower(self, LineBuffer(self.encoding, self.errors, self.max_line))
        directory, name = os.path.split(self.path)
        watch = None
        try:
            # Watch first, then open: a file created in between is not missed.
            watch = watcher.add(directory)
            self._watches.add(watch)
            follower.start(at_end=not self.from_start)
            while True:
                lines, more = follower.poll()
                if watch.closed:
                    lines.extend(follower.flush_rotated())
                if lines:
                    yield lines
                if watch.closed:
                    return
                if more:
                    await asyncio.sleep(0)  # a big file: let the loop breathe
                    continue
                while True:
                    try:
                        if follower.draining:
                            # A rotated file's writer wakes nobody: look again soon.
                            try:
                                async with asyncio.timeout(ROTATED_POLL):
                                    events = await watch.wait()
                            except TimeoutError:
                                break
                        else:
                            events = await watch.wait()
                    except WatcherClosed:
                        if follower.directory_exists():
                            return  # closed (the tail, or a shared watcher): stop following
                        raise FileNotFoundError(
                            f"{self!r}: the directory {directory!r} is gone"
                        ) from None
                    if any(e.name == name or e.change & _RELEVANT for e in events):
                        break
        finally:
            follower.close()
            if watch is not None:
                self._watches.discard(watch)
                watch.close()
            if self.watcher is None:
                watcher.close()


class _Rotated:
    """A file rotated away that its writer may still append to, for a while."""

    __slots__ = ("buffer", "fd", "quiet_since")

    def __init__(self, fd: int, buffer: LineBuffer, now: float) -> None:
        self.fd = fd
        self.buffer = buffer
        self.quiet_since = now


class _Follower:
    """The file-following state machine of a :class:`Tail`: no asyncio, no waiting."""

    __slots__ = ("_buffer", "_fd", "_id", "_last", "_pos", "_rotated", "_tail")

    def __init__(self, tail: Tail, buffer: LineBuffer) -> None:
        self._tail = tail
        self._buffer = buffer
        self._fd: int | None = None
        self._id: tuple[int, int] = (0, 0)
        self._pos = 0
        self._last = b""  # the byte before _pos, to notice a truncation the file outgrew
        self._rotated: list[_Rotated] = []

    def start(self, *, at_end: bool) -> None:
        """Open the file if it exists; at its end, or at its start."""
        if not self._open() or not at_end:
            return
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        # Start after the last complete line, so a line being written is whole.
        window = min(size, CHUNK)
        last = os.pread(self._fd, window, size - window).rfind(b"\n")
        if last >= 0:
            self._pos = size - window + last + 1
        elif window < size:
            self._pos = size
        os.lseek(self._fd, self._pos, os.SEEK_SET)
        self._last = os.pread(self._fd, 1, self._pos - 1) if self._pos else b""

    def _open(self) -> bool:
        try:
            fd = os.open(self._tail.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        self._fd, self._id, self._pos, self._last = fd, (st.st_ino, st.st_dev), 0, b""
        return True

    @property
    def draining(self) -> bool:
        """Whether rotated files are still read (their writers may not have reopened yet)."""
        return bool(self._rotated)

    def directory_exists(self) -> bool:
        """Whether the file's directory still exists."""
        return os.path.isdir(os.path.dirname(self._tail.path))

    def close(self) -> None:
        """Close the file followed and the rotated ones still read."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for rotated in self._rotated:
            os.close(rotated.fd)
        self._rotated.clear()

    def poll(self) -> tuple[list[Any], bool]:
        """The lines ready now, and whether more data is waiting to be read."""
        lines: list[Any] = []
        budget = [READ_AHEAD]
        if self._rotated and not self._drain(lines, budget):
            return lines, True
        if self._fd is None and not self._open():
            return lines, False
        while True:
            fd = self._fd
            assert fd is not None
            if self._truncated(fd):
                self._tail.truncations += 1
                held = len(self._buffer.partial)
                logger.info(
                    "%s: truncated; reading from its start%s",
                    self._tail.path,
                    f" (dropping a partial line of {held} bytes)" if held else "",
                )
                self._buffer.clear()
                self._pos = os.lseek(fd, 0, os.SEEK_SET)
                self._last = b""
            if not self._read(fd, self._buffer, lines, budget):
                return lines, True
            try:
                st = os.stat(self._tail.path)
            except FileNotFoundError:
                return lines, False  # renamed or deleted: keep reading it until a new file
            if (st.st_ino, st.st_dev) == self._id:
                return lines, False
            # Rotated: follow the new file, and keep reading the old one while
            # its writer may still append to it (until it has been quiet for
            # rotated_grace seconds): a daemon reopens its log only when told.
            old = self._buffer
            self._rotated.append(_Rotated(fd, old, time.monotonic()))
            self._buffer = LineBuffer(old.encoding, old.errors, old.max_line)
            self._fd = None
            self._tail.rotations += 1
            logger.info("%s: rotated; following the new file", self._tail.path)
            if not self._open():
                return lines, False

    def flush_rotated(self) -> list[Any]:
        """The unterminated last lines of the rotated files still read (the tail stops)."""
        lines: list[Any] = []
        for rotated in self._rotated:
            lines.extend(rotated.buffer.flush())
        return lines

    def _truncated(self, fd: int) -> bool:
        """Whether the file is now shorter than what was read, or was rewritten over it."""
        if os.fstat(fd).st_size < self._pos:
            return True
        # Truncated and written past the old position before this read: the
        # byte before the position changed (a cheap check that may miss it).
        return self._pos > 0 and os.pread(fd, 1, self._pos - 1) != self._last

    def _drain(self, lines: list[Any], budget: list[int]) -> bool:
        """Read what the rotated files' writers appended; close those quiet long enough."""
        now = time.monotonic()
        for rotated in list(self._rotated):
            before = budget[0]
            if not self._read(rotated.fd, rotated.buffer, lines, budget, track=False):
                return False
            if budget[0] < before:  # its writer appended
                rotated.quiet_since = now
            if now - rotated.quiet_since >= self._tail.rotated_grace:
                lines.extend(rotated.buffer.flush())
                os.close(rotated.fd)
                self._rotated.remove(rotated)
        return True

    def _read(
        self,
        fd: int,
        buffer: LineBuffer,
        lines: list[Any],
        budget: list[int],
        *,
        track: bool = True,
    ) -> bool:
        """Read ``fd`` to its end, within the budget; True if the end was reached."""
        feed = buffer.feed
        while budget[0] > 0:
            data = os.read(fd, CHUNK)
            if not data:
                return True
            if track:
                self._pos += len(data)
                self._last = data[-1:]
            budget[0] -= len(data)
            lines.extend(feed(data))
        return False


# -- lines, every -------------------------------------------------------------------


class _Reader(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


def lines(
    reader: _Reader,
    *,
    encoding: str | None = "utf-8",
    errors: str = "replace",
    max_line: int = MAX_LINE,
) -> Lines:
    """The lines read from ``reader`` (an :class:`asyncio.StreamReader`, say).

    Every line that one ``read`` completes is handed over at once. At end of
    stream an unterminated last line is passed on. Iterate it once.
    """
    return Lines(reader, encoding=encoding, errors=errors, max_line=max_line)


class Lines(LineSupply):
    """The lines of a stream: made by :func:`lines`."""

    def __init__(
        self,
        reader: _Reader,
        *,
        encoding: str | None = "utf-8",
        errors: str = "replace",
        max_line: int = MAX_LINE,
    ) -> None:
        self.reader = reader
        self._buffer = LineBuffer(encoding, errors, max_line)

    def __repr__(self) -> str:
        return f"<Lines of {self.reader!r}>"

    async def batches(self) -> AsyncGenerator[list[Any], None]:
        """Read the stream to its end; yields lists of the lines each read completed."""
        read, buffer = self.reader.read, self._buffer
        while True:
            data = await read(CHUNK)
            if not data:
                rest = buffer.flush()
                if rest:
                    yield rest
                return
            got = buffer.feed(data)
            if got:
                yield got


async def every(seconds: float, *, immediately: bool = False) -> AsyncGenerator[float, None]:
    """Tick every ``seconds`` on the loop's clock; yields each tick's due time.

    Ticks are due at ``start + k * seconds`` (no drift, however long the
    consumer takes); a consumer that falls behind skips the ticks it missed
    rather than getting a burst. With ``immediately`` the first tick is due
    at once.

    Raises:
        ValueError: ``seconds`` is not positive.
    """
    if seconds <= 0:
        raise ValueError(f"every(): seconds must be > 0, got {seconds}")
    loop = asyncio.get_running_loop()
    due = loop.time() + (0.0 if immediately else seconds)
    while True:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield due
        now = loop.time()
        due += seconds
        if due <= now:
            due += ((now - due) // seconds + 1) * seconds
