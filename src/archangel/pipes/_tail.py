"""The file-following state machine of :class:`archangel.pipes.supplies.Tail`.

Private. :class:`Follower` reads: it opens the file at the path, notices
rotations and truncations, keeps reading files rotated away, and hands over
the lines ready. It never waits: :meth:`Tail.batches
<archangel.pipes.supplies.Tail.batches>` waits on the watches it asks for.

The rules it keeps (each has its test in ``tests/test_supplies.py`` or
``tests/test_tail_rotation.py``):

* Every file it has open is read to its end before it is let go. The file at
  the path is *followed*; a file renamed or deleted away from it stays open:
  while nothing replaces it, it is still the one followed (logrotate
  ``nocreate``); once a new file is at the path, the old one is *rotated*, read
  for as long as its writer appends to it and closed after ``rotated_grace``
  quiet seconds.
* Files are read oldest first, each only up to the size it had when the
  newer ones were measured (newest first): a writer that moves on from an
  old file to a new one wrote the old one's last lines before the new one's
  first, so they come out in that order.
* A file that is not the entry named by the path (rotated, renamed away,
  deleted, or reached through a symlink) gets a watch of its own, on its
  inode through ``/proc/self/fd``, since the directory watch reports its
  writes under another name or not at all; failing that it is looked at every
  ``ROTATED_POLL`` seconds.
* A truncation is the file shorter than the position read, or the
  ``MARK`` bytes before that position changed (truncated and written past it
  again before the tail looked). What the tail had not read yet is looked for
  in the copy a copy-truncate rotation left beside the file: a file of the
  same directory whose name starts with the file's name, holding the same
  bytes before that position. It is read from there to its end before the
  file is read again from its start.
* A file whose inode is already open (a symlink swapped back, a file renamed
  back) is not opened twice, so nothing is read twice.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any

from ._lines import LineBuffer

if TYPE_CHECKING:
    from .supplies import Tail
    from .watch import Watch, Watcher

__all__ = ["CHUNK", "MARK", "READ_AHEAD", "ROTATED_POLL", "Follower"]

logger = logging.getLogger("archangel.supplies")

#: Bytes read at a time.
CHUNK = 1 << 16
#: Bytes read before handing lines over and reading on.
READ_AHEAD = 1 << 20
#: Bytes before the position read kept to recognise the file: a truncation
#: the file outgrew changes them, and the copy of a copy-truncate holds them.
MARK = 256
#: How often a file with no watch of its own is looked at, in seconds.
ROTATED_POLL = 0.1
_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


class _File:
    """One file open for reading: the one followed, a rotated one, or a copy."""

    __slots__ = ("buffer", "copy", "fd", "id", "mark", "own_watch", "pos", "quiet_since", "watch")

    def __init__(self, fd: int, ident: tuple[int, int], buffer: LineBuffer) -> None:
        self.fd = fd
        self.id = ident
        self.buffer = buffer
        self.pos = 0
        self.mark = b""  # up to MARK bytes before pos
        self.quiet_since = 0.0
        self.copy = False  # a copy-truncate's copy: read to its end, then closed
        self.own_watch = False  # the directory watch does not report its writes
        self.watch: Watch | None = None


class Follower:
    """Follows the file of a :class:`~archangel.pipes.supplies.Tail`: no waiting."""

    __slots__ = ("_files", "_tail", "_template", "_watcher")

    def __init__(self, tail: Tail, template: LineBuffer, watcher: Watcher) -> None:
        self._tail = tail
        self._template = template
        self._watcher = watcher
        self._files: list[_File] = []  # oldest first; the last one is followed

    # -- what the tail waits on -----------------------------------------------

    def watches(self) -> list[Watch]:
        """The watches of the files that have one of their own."""
        return [f.watch for f in self._files if f.watch is not None]

    def timeout(self) -> float | None:
        """Seconds until the follower must look again even if nothing happens, or None.

        That is when the grace of a rotated file ends, or soon when a file
        needs a watch of its own and has none.
        """
        files = self._files
        if len(files) == 1 and not files[0].own_watch:
            return None
        due: float | None = None
        rotated = [f for f in files[:-1] if not f.copy]
        if rotated:
            now, grace = time.monotonic(), self._tail.rotated_grace
            due = min(f.quiet_since + grace - now for f in rotated)
        if any(f.own_watch and f.watch is None for f in files):
            due = ROTATED_POLL if due is None else min(due, ROTATED_POLL)
        return None if due is None else max(due, 0.0)

    def directory_exists(self) -> bool:
        """Whether the file's directory still exists."""
        return os.path.isdir(os.path.dirname(self._tail.path))

    # -- opening and closing -----------------------------------------------------

    def start(self, *, at_end: bool) -> None:
        """Open the file if it exists; at its end, or at its start."""
        f = self._open()
        if f is None or not at_end:
            return
        size = os.fstat(f.fd).st_size
        # Start after the last complete line, so a line being written is whole.
        window = min(size, CHUNK)
        last = os.pread(f.fd, window, size - window).rfind(b"\n")
        if last >= 0:
            f.pos = size - window + last + 1
        elif window < size:
            f.pos = size
        start = max(0, f.pos - MARK)
        f.mark = os.pread(f.fd, f.pos - start, start)

    def _open(self) -> _File | None:
        """Follow the file at the path, unless it is open already; None if there is none."""
        path = self._tail.path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        st = os.fstat(fd)
        ident = (st.st_ino, st.st_dev)
        files = self._files
        f = next((g for g in files if g.id == ident), None)
        if f is None:
            f = _File(fd, ident, self._new_buffer())
        else:  # renamed or swapped back: go on where it was
            os.close(fd)
            if f is files[-1]:
                return f
            files.remove(f)
        if files:
            old = files[-1]
            old.quiet_since = time.monotonic()
            old.own_watch = True
            self._watch(old)
            self._tail.rotations += 1
            logger.info("%s: rotated; following the new file", path)
        files.append(f)
        try:
            f.own_watch = stat.S_ISLNK(os.lstat(path).st_mode)
        except FileNotFoundError:
            f.own_watch = True  # gone again already
        if f.own_watch:
            self._watch(f)
        elif f.watch is not None:  # the directory watch reports it again
            f.watch.close()
            f.watch = None
        return f

    def _watch(self, f: _File) -> None:
        if f.watch is not None or f.copy:
            return
        try:
            f.watch = self._watcher.add(f"{_FD_DIR}/{f.fd}")
        except OSError as exc:  # no /proc, or out of inotify watches: look every 0.1 s
            logger.debug("%s: no watch on a rotated file (%s)", self._tail.path, exc)

    def _close(self, f: _File) -> None:
        if f.watch is not None:
            f.watch.close()
            f.watch = None
        os.close(f.fd)
        self._files.remove(f)

    def close(self) -> None:
        """Close every file still open, and their watches."""
        for f in list(self._files):
            self._close(f)

    def flush_rotated(self) -> list[Any]:
        """The unterminated last lines of the rotated files (the tail stops)."""
        lines: list[Any] = []
        for f in self._files[:-1]:
            if not f.copy:
                lines.extend(f.buffer.flush())
        return lines

    def _new_buffer(self) -> LineBuffer:
        t = self._template
        return LineBuffer(t.encoding, t.errors, t.max_line)

    # -- reading ---------------------------------------------------------------

    def poll(self) -> tuple[list[Any], bool]:
        """The lines ready now, and whether more data is waiting to be read."""
        lines: list[Any] = []
        budget = [READ_AHEAD]
        self._look_at_path()
        files = self._files
        for f in files:
            if f.watch is not None and f.watch.closed:  # the kernel ended it
                f.watch = None
        if len(files) == 1:
            return lines, not self._read(files[0], lines, budget, None)
        if not files:
            return lines, False
        # Newest first: whatever a writer put in an older file before the
        # newer one reached its size is within the older one's size.
        limits = [os.fstat(f.fd).st_size for f in reversed(files)]
        limits.reverse()
        now = time.monotonic()
        followed = files[-1]
        for f, limit in zip(list(files), limits, strict=True):
            before = budget[0]
            if not self._read(f, lines, budget, limit):
                return lines, True
            if f is followed:
                continue
            if f.copy:
                self._let_go(f, "copy")
            elif budget[0] < before:
                f.quiet_since = now
            elif now - f.quiet_since >= self._tail.rotated_grace:
                lines.extend(f.buffer.flush())
                self._close(f)
        return lines, False

    def _look_at_path(self) -> None:
        """Follow the file at the path if it is not the one followed."""
        files = self._files
        try:
            st = os.stat(self._tail.path)
        except FileNotFoundError:
            if files and not files[-1].own_watch:  # renamed or deleted, nothing new yet
                files[-1].own_watch = True
                self._watch(files[-1])
            return
        if not files or files[-1].id != (st.st_ino, st.st_dev):
            self._open()

    def _read(self, f: _File, lines: list[Any], budget: list[int], limit: int | None) -> bool:
        """Read ``f`` to its end, or to ``limit``, within the budget; True once there.

        False also when a truncation found a copy to read first: poll again.
        """
        size = os.fstat(f.fd).st_size if limit is None else limit
        if self._truncated(f, size) and self._truncation(f):
            return False
        fd, pos, feed, done = f.fd, f.pos, f.buffer.feed, False
        while budget[0] > 0:
            want = CHUNK if limit is None else min(CHUNK, limit - pos)
            if want <= 0:
                done = True
                break
            data = os.pread(fd, want, pos)
            if data:
                pos += len(data)
                budget[0] -= len(data)
                f.mark = (f.mark + data)[-MARK:] if len(data) < MARK else data[-MARK:]
                lines.extend(feed(data))
            if len(data) < want:  # a regular file's end
                done = True
                break
        f.pos = pos
        return done

    def _truncated(self, f: _File, size: int) -> bool:
        """Whether the file is now shorter than what was read, or was rewritten over it."""
        if size < f.pos:
            return True
        mark = f.mark
        return bool(mark) and os.pread(f.fd, len(mark), f.pos - len(mark)) != mark

    def _truncation(self, f: _File) -> bool:
        """Read ``f`` again from its start; True if its copy is to be read first."""
        tail = self._tail
        tail.truncations += 1
        copy = self._copy_of(f) if f is self._files[-1] else None
        if copy is not None:
            # The copy holds what was not read yet: read it first, to its end,
            # with the partial line held (the copy goes on with it).
            copy.buffer, f.buffer = f.buffer, self._new_buffer()
            self._files.insert(self._files.index(f), copy)
            logger.info(
                "%s: truncated; reading what was not read yet from its copy, then the file "
                "from its start",
                tail.path,
            )
            f.pos, f.mark = 0, b""
            return True
        held = len(f.buffer.partial)
        logger.info(
            "%s: truncated; reading from its start%s",
            tail.path,
            f" (dropping a partial line of {held} bytes)" if held else "",
        )
        f.buffer.clear()
        f.pos, f.mark = 0, b""
        return False

    def _copy_of(self, f: _File) -> _File | None:
        """The copy a copy-truncate left of ``f``, positioned where ``f`` was read to."""
        mark = f.mark
        if not mark:
            return None
        directory, base = os.path.split(self._tail.path)
        held = {g.id for g in self._files}
        candidates: list[tuple[int, str]] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name == base or not entry.name.startswith(base):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if (
                        stat.S_ISREG(st.st_mode)
                        and st.st_size > f.pos
                        and (st.st_ino, st.st_dev) not in held
                    ):
                        candidates.append((st.st_mtime_ns, entry.path))
        except OSError:
            return None
        for _, path in sorted(candidates, reverse=True):  # the newest copy first
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            if os.pread(fd, len(mark), f.pos - len(mark)) == mark:
                st = os.fstat(fd)
                copy = _File(fd, (st.st_ino, st.st_dev), f.buffer)
                copy.pos, copy.mark, copy.copy = f.pos, mark, True
                return copy
            os.close(fd)
        return None

    def _let_go(self, f: _File, what: str) -> None:
        """Close a copy read to its end; its unterminated last line was cut by the copy."""
        held = len(f.buffer.partial)
        if held:
            logger.info(
                "%s: the %s ends inside a line: dropping its %d bytes", self._tail.path, what, held
            )
        self._close(f)
