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
* A truncation is the file shorter than the position read, the ``MARK``
  bytes before that position changed (truncated and written past it again
  before the tail looked), or, before anything was read, its first bytes
  changed. Each read takes the ``MARK`` bytes before the position with it (at
  the start, the first bytes), so a truncation is noticed at the next read,
  not after a ``READ_AHEAD`` of the next content; and one made while the
  copies of the last one were looked at (logrotate run back to back) is
  noticed too, its copy read, not taken for the content seen at the last one.
* What the tail had not read yet is looked for in the copies a copy-truncate
  rotation left beside the file (see :mod:`._copies`): the one holding what
  was read is read on from the position, then every copy made after it, oldest
  first, then the file from its start. A tail that lags several rotations
  behind (a slow pipeline) so loses nothing while the copies are there.
  What is in no copy it can read (compressed, deleted) is counted in
  ``Tail.lost_bytes`` and logged, one warning per truncation.
* A file whose inode is already open (a symlink swapped back, a file renamed
  back) is not opened twice, so nothing is read twice.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any

from . import _copies
from ._lines import LineBuffer

if TYPE_CHECKING:
    from .supplies import Tail
    from .watch import Watch, Watcher

__all__ = ["CHUNK", "MARK", "READ_AHEAD", "ROTATED_POLL", "Follower"]

logger = logging.getLogger("archangel.pipes.supplies")  # one logger for the supplies

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

    __slots__ = (
        "buffer",
        "copy",
        "fd",
        "head",
        "id",
        "mark",
        "own_watch",
        "pos",
        "quiet_since",
        "size",
        "watch",
    )

    def __init__(self, fd: int, ident: tuple[int, int], buffer: LineBuffer) -> None:
        self.fd = fd
        self.id = ident
        self.buffer = buffer
        self.pos = 0
        self.mark = b""  # up to MARK bytes before pos
        self.head = os.pread(fd, MARK, 0)  # its first bytes: the content it holds
        self.size = 0  # the size it was last seen at, content unchanged
        self.quiet_since = 0.0
        self.copy = False  # a copy-truncate's copy: read to its end, then closed
        self.own_watch = False  # the directory watch does not report its writes
        self.watch: Watch | None = None


class Follower:
    """Follows the file of a :class:`~archangel.pipes.supplies.Tail`: no waiting."""

    __slots__ = ("_files", "_known", "_tail", "_template", "_watcher")

    def __init__(self, tail: Tail, template: LineBuffer, watcher: Watcher) -> None:
        self._tail = tail
        self._template = template
        self._watcher = watcher
        self._files: list[_File] = []  # oldest first; the last one is followed
        # The first bytes of the copies beside the file at the last truncation:
        # a copy made since, of a file then empty, is known by not being there.
        self._known: frozenset[bytes] | None = None

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
        fd = f.fd
        while budget[0] > 0:
            pos, mark = f.pos, f.mark
            # At the limit, the mark is still read: the file may have been rewritten.
            want = CHUNK if limit is None else max(0, min(CHUNK, limit - pos))
            data = os.pread(fd, len(mark) + want, pos - len(mark))
            # Truncated since the last read: the mark changed, or, read from the start,
            # the first bytes seen at the last truncation (one while copies were looked at).
            rewritten = not pos and data[: len(f.head)] != f.head[: len(data)]
            if rewritten or not data.startswith(mark):
                if self._truncation(f):
                    return False
                continue
            f.size = max(f.size, size)  # the size measured before: the same content
            data = data[len(mark) :]
            if data:
                f.pos = pos + len(data)
                budget[0] -= len(data)
                f.mark = (mark + data)[-MARK:] if len(data) < MARK else data[-MARK:]
                if len(f.head) < MARK and pos <= len(f.head):  # a head seen short grows
                    f.head += data[len(f.head) - pos : MARK - pos]
                lines.extend(f.buffer.feed(data))
            if len(data) < want or want == 0:  # a regular file's end, or the limit
                return True
        return False

    def _truncated(self, f: _File, size: int) -> bool:
        """Whether the file is now shorter than what was read, or its first bytes
        changed before any was read (the MARK is checked as it is read)."""
        if size < f.pos:
            return True
        if f.pos or not size:
            return False
        if f.head:
            return os.pread(f.fd, len(f.head), 0) != f.head
        # Empty when the last truncation was handled: a copy made since says it
        # was written and truncated again meanwhile.
        if self._known is None or f is not self._files[-1]:
            return False
        found = _copies.scan(self._tail.path, {g.id for g in self._files})
        try:
            return bool(_copies.made_since(found, self._known, os.pread(f.fd, MARK, 0)))
        finally:
            for c in found:
                c.close()

    def _truncation(self, f: _File) -> bool:
        """Read ``f`` again from its start; True if copies are to be read first."""
        tail = self._tail
        tail.truncations += 1
        # The content the file holds now, taken before the copies are looked at: a
        # truncation after this is noticed later, its copy found by this head.
        head = os.pread(f.fd, MARK, 0)
        copies = self._copies_of(f, head) if f is self._files[-1] else []
        if copies:
            self._files[self._files.index(f) : self._files.index(f)] = copies
            logger.info(
                "%s: truncated; reading what was not read yet from %d cop%s, then the file "
                "from its start",
                tail.path,
                len(copies),
                "y" if len(copies) == 1 else "ies",
            )
        held = len(f.buffer.partial)  # neither in a copy nor counted lost: cut by the copy
        if held or not copies:
            logger.info(
                "%s: truncated; reading from its start%s",
                tail.path,
                f" (dropping a partial line of {held} bytes)" if held else "",
            )
        f.buffer.clear()
        f.pos, f.mark, f.size = 0, b"", 0
        f.head = head
        return bool(copies)

    def _copies_of(self, f: _File, now: bytes) -> list[_File]:
        """The copies to read before the file again, oldest first; counts what is lost.

        The first one goes on where ``f`` was read to, with the partial line held.
        A copy that starts with ``now``, the file's first bytes, is a copy of what
        the file holds now (logrotate is making the next one): it is not read.
        """
        found = _copies.scan(self._tail.path, {g.id for g in self._files})
        try:
            known, self._known = self._known, _copies.heads(found)
            if not (f.head or f.mark):  # it was empty: what was copied since
                return self._open_copies(f, _copies.made_since(found, known, now))
            first = _copies.holder(found, f.head, f.mark, f.pos)
            if first is None:
                # No copy holds it: the file was emptied in place, or its copy is
                # gone. What it held past the position is lost, as far as seen.
                self._lose(max(f.size - f.pos, 0) + len(f.buffer.partial), [], f)
                f.buffer.clear()
                return []
            return self._open_copies(f, [first, *_copies.after(found, first, now)])
        finally:
            for c in found:
                if c.fd >= 0:
                    c.close()

    def _open_copies(self, f: _File, chain: list[_copies.Copy]) -> list[_File]:
        """A :class:`_File` for each copy of ``chain`` left to read; counts the others."""
        opened: list[_File] = []
        lost, unread = 0, []
        for c in chain:
            at = f.pos if c is chain[0] else 0
            cut = at - len(f.buffer.partial) if c is chain[0] else 0  # where the line held began
            if c.compressed:
                if c.size is None or c.size > cut:
                    lost += max((c.size or 0) - cut, 0)
                    unread.append(c)
                if c is chain[0]:
                    f.buffer.clear()  # the rest of its line is in the compressed copy
                continue
            if c.size is not None and c.size <= at:
                continue  # read to its end already (or past it, before the truncation)
            g = _File(c.fd, c.id, f.buffer if at else self._new_buffer())
            if at:
                g.pos, g.mark = at, f.mark
                f.buffer = self._new_buffer()
            g.copy = True
            c.fd = -1  # g's now: not closed with the copies left
            opened.append(g)
        if unread:
            self._lose(lost, unread, f)
        return opened

    def _lose(self, count: int, unread: list[_copies.Copy], f: _File) -> None:
        """Count and log what no copy can give back: one warning per truncation."""
        if count <= 0 and not unread:
            return
        self._tail.lost_bytes += max(count, 0)
        unknown = [c.name for c in unread if c.size is None]
        logger.warning(
            "%s: truncated; %d bytes it had not read are lost%s%s",
            self._tail.path,
            max(count, 0),
            (": they are in compressed copies (" + ", ".join(c.name for c in unread) + ")")
            if unread
            else f" (read {f.pos} of the {f.size} bytes seen; no copy of the rest is beside it)",
            f", and more in {', '.join(unknown)} (size unknown)" if unknown else "",
        )

    def _let_go(self, f: _File, what: str) -> None:
        """Close a copy read to its end; its unterminated last line was cut by the copy."""
        held = len(f.buffer.partial)
        if held:
            logger.info(
                "%s: the %s ends inside a line: dropping its %d bytes", self._tail.path, what, held
            )
        self._close(f)
