"""Supplies: where a pipeline's items come from.

A supply is any iterable or async iterable (see :class:`~archangel.Pipeline`).
This module has the usual ones:

* :func:`tail` follows a file the way ``tail -F`` does: appends, truncation,
  rotation, a file that does not exist yet; given several files
  (``tail([a, b])``, a :class:`Tails`), it follows each of them so, their
  lines interleaved as they come, tagged with their file if asked;
* :func:`lines` splits an :class:`asyncio.StreamReader` (or anything with an
  ``async read(n)``) into lines;
* :func:`every` ticks on the loop's clock without drift;
* :func:`line_server` turns each line received on a TCP or Unix socket into an
  item, each connection being a process of its own (see :mod:`archangel.pipes.line_server`).

The line supplies hand a pipeline every line that is ready at once, as a
list (:meth:`LineSupply.batches`); ``async for line in supply`` gives them
one at a time. Lines are ``str`` without their terminator (``encoding=None``
keeps bytes).

What this module is not: it does not parse lines (that is a cog's job) and
does not watch files itself (see :mod:`archangel.pipes.watch`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any, NamedTuple, Protocol, overload

from ..bus import timers
from ..errors import InvalidArgument, WatcherClosed, check_number
from ._lines import MAX_STREAM_LINE, LineBuffer, LineSupply
from ._tail import CHUNK, Follower
from .line_server import LineConnection, LineServer, line_server
from .watch import Change, Watch, Watcher, wait_any

__all__ = [
    "ROTATED_GRACE",
    "FileLine",
    "LineBuffer",
    "LineConnection",
    "LineServer",
    "LineSupply",
    "Lines",
    "Tail",
    "Tails",
    "every",
    "line_server",
    "lines",
    "tail",
]

logger = logging.getLogger(__name__)

#: Seconds a rotated file is still read after its last append, by default
#: (its writer may append until it reopens its log).
ROTATED_GRACE = 5.0
_RELEVANT = Change.OVERFLOW | Change.SELF_DELETED | Change.SELF_MOVED


# -- tail ---------------------------------------------------------------------------


_Path = str | os.PathLike[str]


@overload
def tail(  # type: ignore[overload-overlap]  # a str is a Sequence too: this one comes first
    path: _Path,
    from_start: bool = False,
    watcher: Watcher | None = None,
    *,
    encoding: str | None = "utf-8",
    errors: str = "replace",
    max_line: int = MAX_STREAM_LINE,
    rotated_grace: float = ROTATED_GRACE,
) -> Tail: ...


@overload
def tail(
    path: Sequence[_Path],
    from_start: bool = False,
    watcher: Watcher | None = None,
    *,
    encoding: str | None = "utf-8",
    errors: str = "replace",
    max_line: int = MAX_STREAM_LINE,
    rotated_grace: float = ROTATED_GRACE,
    with_path: bool = False,
) -> Tails: ...


def tail(
    path: _Path | Sequence[_Path],
    from_start: bool = False,
    watcher: Watcher | None = None,
    *,
    encoding: str | None = "utf-8",
    errors: str = "replace",
    max_line: int = MAX_STREAM_LINE,
    rotated_grace: float = ROTATED_GRACE,
    with_path: bool = False,
) -> Tail | Tails:
    """Follow the lines appended to a file (or to several), like ``tail -F``.

    Args:
        path: The file, or a list (any sequence) of files: then each is
            followed as one file would be, with its own rotations (a
            :class:`Tails`). A directory must exist; a file need not: then
            the tail waits for it and reads it from its start.
        from_start: Read the file from its start instead of from its end.
        watcher: The :class:`~archangel.pipes.watch.Watcher` to use (shared: the
            tail adds its watches and removes them, never closes it); by
            default each iteration makes its own and closes it.
        encoding: How to decode lines; None yields bytes.
        errors: The decoding error handler.
        max_line: The longest partial line held, in bytes.
        rotated_grace: Seconds a rotated file is still read after its
            writer last appended to it.
        with_path: Each item is a :class:`FileLine` ``(path, line)`` rather
            than the line alone (a :class:`Tails` even for one path).

    Returns:
        A :class:`Tail` for one path, a :class:`Tails` for a list: iterate it
        (or give it to a pipeline) to follow.

    Raises:
        InvalidArgument: Not a path or a list of paths, an empty list, a
            file given twice, a second path where ``from_start`` goes
            (``tail(a, b)``), a negative ``rotated_grace`` or a ``max_line``
            under 1.
    """
    second: object = from_start
    if isinstance(second, str | bytes | os.PathLike):
        # tail(a, b) would read a from its start and never follow b.
        raise InvalidArgument(
            f"tail({path!r}, {second!r}): several files go in one list: tail([a, b])"
        )
    if with_path or not isinstance(path, str | os.PathLike):
        if not isinstance(path, str | os.PathLike | Sequence) or isinstance(path, bytes):
            raise InvalidArgument(
                f"tail({path!r}): give a path (a str or an os.PathLike) or a list of paths"
            )
        paths = [path] if isinstance(path, str | os.PathLike) else list(path)
        return Tails(
            paths,
            from_start,
            watcher,
            encoding=encoding,
            errors=errors,
            max_line=max_line,
            rotated_grace=rotated_grace,
            with_path=with_path,
        )
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
    until completed. Every line is delivered once, in the order written
    (but see copy-truncate). It survives:

    * **rotation by rename** (logrotate ``create``, ``compress``,
      ``delaycompress``): the new file is read from its start, and the old
      one is still read, for the lines its writer appends until it reopens
      its log, until it has been quiet for ``rotated_grace`` seconds (5 by
      default); then its unterminated last line, if any, is passed on as a
      line. The old file's lines come before the new one's: each file is read
      only up to the size it had when the newer one was measured.
    * **a file renamed or deleted with nothing new at the path** (logrotate
      ``nocreate``, or ``compress`` without ``create``): it stays the file
      followed, through a watch on its inode, so what its writer appends comes
      at once; a file that appears at the path later is a rotation as above.
    * **truncation** (copy-truncate): when the file becomes shorter than the
      position read, or the 256 bytes before that position change (it was
      truncated and written past it again before the tail looked), reading
      restarts at its start and a partial line held from before is dropped.
      What the tail had not read yet is first read from the copies beside
      the file (files of the same directory whose name starts with the
      file's name: ``app.log.1``, ``app.log-20260101``): the one holding the
      same first bytes and the same bytes before that position, from there
      (the partial line goes on in it), then every copy made after it,
      oldest first (logrotate's ``.1``, ``.2`` by number, other names by
      modification time), so a tail that lags several rotations behind loses
      nothing while the copies are there. A copy's unterminated end is
      dropped. What is only in a compressed copy, or in one already deleted,
      is counted in :attr:`lost_bytes` and logged (one warning per
      truncation). Lines written between the copy and the truncation are in
      neither, and lost (logrotate documents that window).
    * **a symlink** to the file, swapped to another one (a rotation) or back
      (the file is read on from where it was, not again).
    * **a missing file**: it is waited for, then read from its start.

    A tail that does not look at the file between two rename rotations of it
    (its pipeline held it back longer than the time between them) cannot
    know the file in the middle: that file's lines are missed.

    Each iteration (``async for``, or a pipeline reading :meth:`batches`)
    follows the file afresh; :attr:`rotations`, :attr:`truncations` and
    :attr:`lost_bytes` count across iterations.

    Attributes:
        path: The file followed.
        rotations: How many times a new file replaced the one followed.
        truncations: How many times the file was found truncated.
        lost_bytes: Bytes the file held that the tail could not read: at a
            truncation, what it had not read yet that is only in compressed
            copies (gzip records their size; other compressors' copies add
            nothing here, and are named in the warning) or in no copy (then as
            much of the file as the tail had seen). Not the copy-truncate
            window, which no reader can see.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        from_start: bool = False,
        watcher: Watcher | None = None,
        *,
        encoding: str | None = "utf-8",
        errors: str = "replace",
        max_line: int = MAX_STREAM_LINE,
        rotated_grace: float = ROTATED_GRACE,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise InvalidArgument(f"tail(): a path is a str or an os.PathLike, not {path!r}")
        check_number(rotated_grace, f"tail({path!r}): rotated_grace")
        check_number(max_line, f"tail({path!r}): max_line", integer=True)
        if max_line < 1:
            raise InvalidArgument(f"tail({path!r}): max_line must be >= 1 byte, got {max_line!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.from_start = from_start
        self.watcher = watcher
        self.encoding = encoding
        self.errors = errors
        self.max_line = max_line
        self.rotated_grace = rotated_grace
        self.rotations = 0
        self.truncations = 0
        self.lost_bytes = 0
        self._watches: set[Watch] = set()

    def __repr__(self) -> str:
        return (
            f"<Tail {self.path!r} rotations={self.rotations} truncations={self.truncations} "
            f"lost_bytes={self.lost_bytes}>"
        )

    def close(self) -> None:
        """End the iterations in progress once they have handed over what they read.

        A pipeline's ``stop`` calls this. A later iteration follows afresh.
        """
        for watch in list(self._watches):
            watch.close()

    def batches(self) -> AsyncGenerator[list[Any], None]:
        """Follow the file; yields lists of the lines ready (see :class:`Tail`)."""
        return self._batches(self.watcher)

    async def _batches(self, shared: Watcher | None) -> AsyncGenerator[list[Any], None]:
        watcher = shared if shared is not None else Watcher()
        buffer = LineBuffer(self.encoding, self.errors, self.max_line)
        follower = Follower(self, buffer, watcher)
        directory, name = os.path.split(self.path)
        watch = None
        try:
            # Watch first, then open: a file created in between is not missed.
            watch = watcher.add(directory)
            self._watches.add(watch)
            follower.start(at_end=not self.from_start)
            while True:
                lines, more = follower.poll()
                closed = watch.closed
                if closed:
                    lines.extend(follower.flush_rotated())
                if lines:
                    yield lines
                if closed:
                    if not follower.directory_exists():
                        raise FileNotFoundError(f"{self!r}: the directory {directory!r} is gone")
                    return  # closed (the tail, or a shared watcher): stop following
                if more:
                    await asyncio.sleep(0)  # a big file: let the loop breathe
                    continue
                await _changed(watch, name, follower)
        finally:
            follower.close()
            if watch is not None:
                self._watches.discard(watch)
                watch.close()
            if shared is None:
                watcher.close()


class FileLine(NamedTuple):
    """A line of one of the files of a :class:`Tails` made ``with_path=True``."""

    #: The file's path, as :attr:`Tail.path` (absolute).
    path: str
    #: The line (``str``, or ``bytes`` with ``encoding=None``).
    line: Any


_Read = tuple[int, list[Any] | BaseException | None]


class Tails(LineSupply):
    """Follows several files at once: made by :func:`tail` given a list of paths.

    Each file is followed by a :class:`Tail` of its own (:attr:`tails`, in the
    order given), with everything a :class:`Tail` survives, each rotation
    handled for its file alone; the tails share one
    :class:`~archangel.pipes.watch.Watcher` (the one given, or one per iteration).
    Lines come interleaved as they arrive: whatever the files have ready is
    handed over as one batch, each file's lines in their order. With
    ``with_path`` each item is a :class:`FileLine` naming its file.

    While the pipeline is slow, each file reads at most one batch ahead
    (about a megabyte), so memory stays bounded. A file whose tail fails (its
    directory was removed) ends the whole supply with that error, once the
    lines already read are handed over; closing (the pipeline's ``stop``)
    ends it once every file has handed over what it read.

    Attributes:
        tails: The :class:`Tail` of each file, in the order given.
        with_path: Whether items are :class:`FileLine` tuples.
    """

    def __init__(
        self,
        paths: Sequence[_Path],
        from_start: bool = False,
        watcher: Watcher | None = None,
        *,
        encoding: str | None = "utf-8",
        errors: str = "replace",
        max_line: int = MAX_STREAM_LINE,
        rotated_grace: float = ROTATED_GRACE,
        with_path: bool = False,
    ) -> None:
        if isinstance(paths, str | bytes | os.PathLike):
            raise InvalidArgument(f"Tails: paths must be a list of paths, not {paths!r}")
        self.tails = [
            Tail(
                p,
                from_start,
                watcher,
                encoding=encoding,
                errors=errors,
                max_line=max_line,
                rotated_grace=rotated_grace,
            )
            for p in paths
        ]
        if not self.tails:
            raise InvalidArgument("tail(): no file to follow (an empty list of paths)")
        seen: set[str] = set()
        for one in self.tails:
            if one.path in seen:
                raise InvalidArgument(f"tail(): the file {one.path!r} is given twice")
            seen.add(one.path)
        self.watcher = watcher
        self.with_path = with_path

    def __repr__(self) -> str:
        paths = ", ".join(repr(p) for p in self.paths)
        return f"<Tails [{paths}] rotations={self.rotations} truncations={self.truncations}>"

    @property
    def paths(self) -> list[str]:
        """The files followed, absolute, in the order given."""
        return [one.path for one in self.tails]

    @property
    def rotations(self) -> int:
        """Rotations seen, summed over the files (each :class:`Tail` has its own)."""
        return sum(one.rotations for one in self.tails)

    @property
    def truncations(self) -> int:
        """Truncations seen, summed over the files."""
        return sum(one.truncations for one in self.tails)

    def close(self) -> None:
        """End the iterations in progress once every file has handed over what it read."""
        for one in self.tails:
            one.close()

    async def batches(self) -> AsyncGenerator[list[Any], None]:
        """Follow every file; yields lists of the lines ready (see :class:`Tails`)."""
        loop = asyncio.get_running_loop()
        watcher = self.watcher if self.watcher is not None else Watcher()
        # One reader task per file, each a plain Tail on the shared watcher:
        # the single-file machinery, rotations and all, runs unchanged. The
        # queue holds at most one batch per file: a slow pipeline slows them.
        queue: asyncio.Queue[_Read] = asyncio.Queue(len(self.tails))
        readers = [
            loop.create_task(self._read(index, one, watcher, queue), name=f"tail {one.path}")
            for index, one in enumerate(self.tails)
        ]
        running = len(readers)
        try:
            while running:
                ready = [await queue.get()]
                while not queue.empty():
                    ready.append(queue.get_nowait())
                batch: list[Any] = []
                failure: BaseException | None = None
                for index, got in ready:
                    if got is None or isinstance(got, BaseException):
                        running -= 1
                        failure = failure or got
                    elif self.with_path:
                        path = self.tails[index].path
                        batch.extend([FileLine(path, line) for line in got])
                    else:
                        batch.extend(got)
                if batch:
                    yield batch
                if failure is not None:
                    raise failure
        finally:
            for reader in readers:
                reader.cancel()
            pending = [r for r in readers if not r.done()]
            while pending:
                try:
                    await asyncio.wait(pending)
                except asyncio.CancelledError:
                    break  # cancelled again: the readers are cancelled and end by themselves
                pending = [r for r in pending if not r.done()]
            if self.watcher is None:
                watcher.close()

    @staticmethod
    async def _read(index: int, one: Tail, watcher: Watcher, queue: asyncio.Queue[_Read]) -> None:
        # The shared watcher is lent to the Tail for this iteration only (a
        # Tail made without one would open an inotify fd of its own per file).
        end: BaseException | None = None
        batches = one._batches(watcher)
        try:
            async for lines in batches:
                await queue.put((index, lines))
        except Exception as exc:
            end = exc
        finally:
            await batches.aclose()
        await queue.put((index, end))


async def _changed(watch: Watch, name: str, follower: Follower) -> None:
    """Wait until the file may have changed: an event about it, or the watch closed."""
    directory = watch.path
    while True:
        watches = [watch, *follower.watches()]
        timeout = follower.timeout()
        if timeout is None and len(watches) == 1:  # the usual case: one file, in place
            try:
                events = await watch.wait()
            except WatcherClosed:
                return
        elif timeout is None:
            events = await wait_any(watches)
        else:
            # A rotated file's grace ends, or a file without a watch of its
            # own wakes nobody: look again then.
            try:
                async with asyncio.timeout(timeout):
                    events = await wait_any(watches)
            except TimeoutError:
                return
        if any(w.closed for w in watches):
            return
        for event in events:
            # A file's own watch only ever speaks of that file.
            if event.path != directory or event.name == name or event.change & _RELEVANT:
                return


# -- lines, every -------------------------------------------------------------------


class _Reader(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


def lines(
    reader: _Reader,
    *,
    encoding: str | None = "utf-8",
    errors: str = "replace",
    max_line: int = MAX_STREAM_LINE,
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
        max_line: int = MAX_STREAM_LINE,
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


def every(seconds: float, *, immediately: bool = False) -> AsyncGenerator[float, None]:
    """Tick every ``seconds`` on the loop's clock; yields each tick's due time.

    A :class:`~archangel.bus.timers.Timer` drives it, with the timer's rules:
    ticks are due at ``start + k * seconds`` (no drift, however long the
    consumer takes), and a consumer that falls behind skips the ticks it
    missed rather than getting a burst (the time the consumer holds a tick
    is the timer's call: the next one is due at the first deadline after it
    asks again). The clock starts at the first ``anext``. With
    ``immediately`` the first tick is due at once.

    Raises:
        InvalidArgument: ``seconds`` is not positive (at the call, not at the
            first tick).
    """
    if not seconds > 0:
        raise InvalidArgument(f"every(): seconds must be > 0, got {seconds}")
    return _ticks(seconds, immediately)


async def _ticks(seconds: float, immediately: bool) -> AsyncGenerator[float, None]:
    loop = asyncio.get_running_loop()
    # The consumer's request for the next tick: (its due time, a future the
    # consumer resolves when it asks for the one after). The timer's call
    # lasts until then, so the timer re-arms (and skips) as the consumer goes.
    requests: list[asyncio.Future[tuple[float, asyncio.Future[None]]]] = []

    async def hand_over() -> bool:
        if not requests:  # no consumer waiting (it went away): nothing to hand
            return True
        request = requests.pop()
        if request.done():
            return True
        taken: asyncio.Future[None] = loop.create_future()
        assert timer.deadline is not None
        request.set_result((timer.deadline, taken))
        await taken
        return True

    timer = timers.every(loop, seconds, hand_over, delay=0.0 if immediately else None)
    try:
        while True:
            request: asyncio.Future[tuple[float, asyncio.Future[None]]] = loop.create_future()
            requests.append(request)
            due, taken = await request
            yield due
            taken.set_result(None)
    finally:
        timer.cancel()
