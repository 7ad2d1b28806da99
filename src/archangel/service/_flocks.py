"""Who holds an ``flock`` on a pidfile, asked without taking a lock a starter could trip on.

Private to :mod:`archangel.service.pidfile`. A start takes an exclusive ``flock`` on a
stale pidfile before it replaces it; a reader that took even a shared lock for
a moment would make that start fail. So readers look the lock up in the
kernel's table, ``/proc/locks`` (Linux), and fall back to a brief shared lock
only where that table cannot be read; a start tells such a shared lock from a
holder's exclusive one with :func:`share_locked_only`.
"""

from __future__ import annotations

import fcntl
import os

__all__ = ["exclusively_locked", "share_locked_only"]


def share_locked_only(fd: int) -> bool:
    """Whether the file open at ``fd``, which we could not lock exclusively, has only shared locks.

    Taking a shared lock ourselves succeeds only when nobody holds an exclusive
    one; it is dropped when ``fd`` is closed.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def exclusively_locked(fd: int, pid: int) -> bool:
    """Whether a process holds an exclusive ``flock`` on the file open at ``fd``.

    ``pid`` is the PID the file names, the expected holder.
    """
    listed = _listed(fd, pid)
    if listed is not None:
        return listed
    try:  # no /proc/locks: probe with a shared lock, which PidFile.acquire() waits out
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # locked (or we cannot tell: do not call a live daemon stale)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


_PROC_LOCKS = "/proc/locks"


def _listed(fd: int, pid: int) -> bool | None:
    """Whether the kernel lists an exclusive ``flock`` on the file; None if it cannot tell."""
    try:
        info = os.fstat(fd)
        with open(_PROC_LOCKS, "rb") as file:
            table = file.read().decode("ascii", "replace")
    except OSError:
        return None
    return _flock_listed(table, info.st_dev, info.st_ino, pid)


def _flock_listed(table: str, device: int, inode: int, pid: int) -> bool:
    # A line reads "3: FLOCK  ADVISORY  WRITE 1234 fe:01:2148841 0 EOF" (holder PID,
    # major:minor in hex, inode); "3: -> FLOCK ..." is a process waiting for it.
    where = f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1:4] != ["FLOCK", "ADVISORY", "WRITE"]:
            continue
        if fields[5] == where:
            return True
        # Some file systems (btrfs subvolumes) list another device than stat()
        # gives; the inode and the holder being the PID in the file then tell.
        if fields[5].endswith(f":{inode}") and fields[4] == str(pid):
            return True
    return False
