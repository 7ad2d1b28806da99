"""The copies a copy-truncate rotation leaves beside a file: found, ordered, measured.

Private, for :mod:`._tail`. A *copy* of ``app.log`` is a regular file of the
same directory whose name starts with ``app.log`` (``app.log.1``,
``app.log.2.gz``, ``app.log-20260101``, ``app.log.old``). This module opens
them, tells which one holds the content the tail was reading (the *holder*),
and which ones came after it, oldest first; it reads no lines and keeps no
state (:class:`~._tail.Follower` does).

The rules:

* The holder is recognised by bytes: it starts with the first bytes the tail
  saw of the file, and holds the ``MARK`` bytes the tail read before its
  position, as far as it reaches.
* The copies after it are those of the same *shape* (the name's part after
  the file's name, digits aside, a compressed copy's extension aside), so an
  ``app.log.pos`` beside ``app.log.1`` is never taken for one. logrotate's
  numbered copies (``.1``, ``.2.gz``) are ordered by their number (the higher
  the older: logrotate renames ``.1`` to ``.2`` as it makes a new ``.1``);
  other names (``dateext``) by their modification time, which a rename keeps.
* A copy of what the file holds now (logrotate making the next one) is not
  one of them: its lines are read from the file. A file that was empty when
  the tail last looked has no first bytes to find its copy by: the copies
  made since are those whose first bytes no copy had then.
* A compressed copy cannot be read; its size is known for gzip (logrotate's
  default ``compresscmd``: the size gzip records at the end of the file, modulo
  4 GiB), not for the others (xz, bzip2, zstd, lz4, recognised by their magic
  bytes). A copy being compressed is there twice, readable and compressed:
  the readable one is kept.
"""

from __future__ import annotations

import os
import re
import stat
import zlib

__all__ = ["Copy", "after", "heads", "holder", "made_since", "ordered", "scan"]

_KNOWN = 32  # first bytes enough to tell one copy from another

_SCANS = 5  # scans at most while logrotate renames the copies; then the last one is used

# The magic bytes of gzip, bzip2, xz, zstd and lz4.
_COMPRESSED = re.compile(
    rb"\x1f\x8b|BZh[1-9]1AY&SY|\xfd7zXZ\x00|\x28\xb5\x2f\xfd|\x04\x22\x4d\x18"
)
_NUMBER = re.compile(r"\d+")
_NUMBERED = re.compile(r"\.(\d+)")  # logrotate's own names: app.log.1, app.log.2.gz
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]*$")  # .gz, .xz, .zst, .bz2


class Copy:
    """One file beside the followed one that may be a copy of it, open for reading."""

    __slots__ = ("compressed", "fd", "id", "mtime", "name", "number", "shape", "size")

    def __init__(
        self, name: str, fd: int, st: os.stat_result, compressed: bool, base: str
    ) -> None:
        self.name = name
        self.fd = fd
        self.id = (st.st_ino, st.st_dev)
        self.mtime = st.st_mtime_ns
        self.compressed = compressed
        suffix = name[len(base) :]
        if compressed:
            suffix = _EXTENSION.sub("", suffix)
        numbered = _NUMBERED.fullmatch(suffix)
        self.number = int(numbered[1]) if numbered else None
        self.shape = _NUMBER.sub("#", suffix)
        #: Bytes it holds uncompressed; None when that cannot be known.
        self.size: int | None = st.st_size
        if compressed:
            self.size = _gzip_size(fd, st.st_size)

    def __repr__(self) -> str:
        return f"<Copy {self.name!r} size={self.size}{' compressed' if self.compressed else ''}>"

    def head(self, n: int) -> bytes:
        """Its first ``n`` bytes, uncompressed (b"" when they cannot be read)."""
        if not self.compressed:
            return os.pread(self.fd, n, 0)
        return _gunzipped_head(self.fd, n)

    def close(self) -> None:
        os.close(self.fd)


def scan(path: str, held: set[tuple[int, int]]) -> list[Copy]:
    """Open the copies beside ``path`` that no ``held`` file (inode, device) is.

    logrotate may be renaming them meanwhile (``.1`` to ``.2``): the names are
    read again after opening, and the scan made again if they changed, so each
    copy is opened under the name it has, once.
    """
    directory, base = os.path.split(path)
    copies: list[Copy] = []
    for _ in range(_SCANS):
        for c in copies:
            c.close()
        names = _names(directory, base)
        copies = _open(directory, base, names, held)
        if _names(directory, base) == names and all(
            _same(os.path.join(directory, c.name), c) for c in copies
        ):
            break
    readable = {c.name for c in copies if not c.compressed}
    for c in [c for c in copies if c.compressed and _EXTENSION.sub("", c.name) in readable]:
        c.close()
        copies.remove(c)
    return copies


def _names(directory: str, base: str) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in entries if e.name != base and e.name.startswith(base))
    except OSError:
        return []


def _open(directory: str, base: str, names: list[str], held: set[tuple[int, int]]) -> list[Copy]:
    copies: list[Copy] = []
    seen = set(held)
    for name in names:
        try:  # non-blocking: a FIFO named so must not hang the tail
            fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_dev) in seen:
            os.close(fd)
            continue
        seen.add((st.st_ino, st.st_dev))
        compressed = bool(_COMPRESSED.match(os.pread(fd, 16, 0)))
        copies.append(Copy(name, fd, st, compressed, base))
    return copies


def _same(path: str, c: Copy) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == c.id


def holder(copies: list[Copy], head: bytes, mark: bytes, pos: int) -> Copy | None:
    """The copy holding what was read up to ``pos``: its first bytes ``head``, and
    ``mark`` (the bytes before ``pos``) where it reaches that far."""
    start = pos - len(mark)
    for c in copies:
        if head and c.head(len(head)) != head:
            continue
        if c.compressed:  # only its head can be compared
            if head:
                return c
            continue
        reach = min(pos, c.size or 0) - start  # of the mark, the part it holds
        if reach <= 0:
            if head:
                return c
            continue
        if os.pread(c.fd, reach, start) == mark[:reach]:
            return c
    return None


def after(copies: list[Copy], first: Copy, now: bytes) -> list[Copy]:
    """The copies made after ``first``, oldest first: the same shape, newer.

    They end before a copy of what the file holds ``now`` (its first bytes):
    logrotate is making the next copy, and those lines come from the file.
    """
    same = ordered([c for c in copies if c.shape == first.shape])
    newer = same[same.index(first) + 1 :]
    ends = next((i for i, c in enumerate(newer) if _alike(c.head(_KNOWN), now)), len(newer))
    return newer[:ends]


def heads(copies: list[Copy]) -> frozenset[bytes]:
    """What tells ``copies`` from the copies made later (see :func:`made_since`)."""
    return frozenset(c.head(_KNOWN) for c in copies)


def made_since(copies: list[Copy], known: frozenset[bytes] | None, now: bytes) -> list[Copy]:
    """The copies not ``known`` (by :func:`heads`, earlier), oldest first, but for
    one of what the file holds ``now``: those of a file that was empty then."""
    if known is None:  # no earlier look: nothing to tell them by
        return []
    new = []
    for c in copies:
        head = c.head(_KNOWN)
        if head and head not in known and not _alike(head, now):
            new.append(c)
    return ordered(new)


def _alike(head: bytes, now: bytes) -> bool:
    """Whether a copy starting with ``head`` is one of content starting with ``now``
    (either may be the shorter: a copy being made, a file just written)."""
    return bool(head) and bool(now) and head[: len(now)] == now[: len(head)]


def ordered(copies: list[Copy]) -> list[Copy]:
    """``copies`` oldest first: by number if all are numbered, else by modification time."""
    if all(c.number is not None for c in copies):
        return sorted(copies, key=lambda c: -(c.number or 0))
    return sorted(copies, key=lambda c: (c.mtime, c.name))


def _gzip_size(fd: int, size: int) -> int | None:
    """The size a gzip file records at its end (ISIZE, modulo 4 GiB), or None."""
    if size < 18 or os.pread(fd, 2, 0) != b"\x1f\x8b":
        return None
    return int.from_bytes(os.pread(fd, 4, size - 4), "little")


def _gunzipped_head(fd: int, n: int) -> bytes:
    """The first ``n`` bytes a gzip file holds, or b"" if it is not one."""
    inflate = zlib.decompressobj(wbits=31)
    out, at = b"", 0
    try:
        while len(out) < n and not inflate.eof:
            chunk = os.pread(fd, 4096, at)
            if not chunk:
                break
            at += len(chunk)
            # Stops at n bytes out: nothing is left unconsumed before that.
            out += inflate.decompress(chunk, n - len(out))
    except zlib.error:
        return b""
    return out
