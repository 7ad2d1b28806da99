"""Pidfiles: hold one under a lock while running, and read or signal one from outside.

A :class:`PidFile` is written atomically and kept under an exclusive ``flock``
for the daemon's whole life; the lock, not the PID in it, says whether the
daemon runs. :func:`read_pid`, :func:`check` and :func:`send_signal` serve the
command line, which talks to a running daemon from outside; each failure is a
:class:`~archangel.errors.PidFileUnusable` whose ``reason`` says what is wrong.
Readers take no lock (on Linux they look the lock up in ``/proc/locks``), so
reading a pidfile never makes a concurrent start fail.
Plain operating-system calls, no asyncio. It is not daemon mode (forking,
stdio, privileges): that is :mod:`archangel.service.daemon`, which re-exports these
names.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import stat
import time
from types import TracebackType

from ..errors import PidFileUnusable
from ._flocks import exclusively_locked, share_locked_only

__all__ = ["PidFile", "check", "read_pid", "send_signal"]

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

# How long acquire() waits for shared locks on a stale pidfile to go: readers
# of another program (or of an older archangel) may take one for a moment.
_READERS_PATIENCE = 1.0


class PidFile:
    """A pidfile holding our PID under an exclusive ``flock`` for as long as we run.

    :meth:`acquire` writes the PID to a temporary file in the same directory,
    locks it and moves it into place (``link`` when the path is free,
    ``rename`` over a stale file), so a reader sees either no file or a whole
    one. A file nobody holds the lock on is stale, whatever PID it names: it
    is replaced, with a warning; a shared ``flock`` on it (a reader's) is
    waited out for up to a second, never taken for a running instance. A path
    that is not a regular file (a directory, a device) is refused, never
    replaced. Acquire after
    :func:`~archangel.service.daemon.daemonize` (the PID changes there); a pidfile in
    a directory the daemon can no longer write after
    :func:`~archangel.service.daemon.drop_privileges` stays behind at exit, which is
    harmless, since the next start finds it unlocked.

    Use it as a context manager, or call :meth:`acquire` and :meth:`release`.

    Attributes:
        path: The pidfile's path.
        pid: The PID written, while held.
    """

    def __init__(self, path: StrPath) -> None:
        self.path = os.fspath(path)
        self.pid: int | None = None
        self._fd: int | None = None

    def __repr__(self) -> str:
        state = f"held by pid {self.pid}" if self._fd is not None else "released"
        return f"<PidFile {self.path!r} [{state}]>"

    @property
    def held(self) -> bool:
        """Whether this process holds the pidfile."""
        return self._fd is not None and self.pid == os.getpid()

    def acquire(self) -> None:
        """Write our PID to the pidfile and lock it, replacing a stale pidfile.

        Raises:
            PidFileUnusable: With ``reason`` ``"held"`` when a live process
                holds it (the message names the path and that PID), else
                ``"permission"`` or ``"io"`` when it cannot be written (its
                directory does not exist, say) or is not a regular file.
        """
        if self._fd is not None:
            raise PidFileUnusable(
                f"pidfile {self.path} is already held by {self!r}", reason="held", path=self.path
            )
        pid = os.getpid()
        directory, name = os.path.split(self.path)
        temp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}")
        try:
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise PidFileUnusable(
                f"cannot create pidfile {self.path}: "
                f"directory {os.path.abspath(directory or '.')} does not exist",
                reason="io",
                path=self.path,
            ) from None
        except OSError as exc:
            raise _os_error(exc, f"cannot create pidfile {self.path}", self.path) from exc
        try:
            os.write(fd, f"{pid}\n".encode())
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._install(temp)
        except BaseException:
            os.close(fd)
            raise
        finally:
            _unlink_quietly(temp)
        self._fd, self.pid = fd, pid
        logger.debug("pidfile %s acquired for pid %d", self.path, pid)

    def _install(self, temp: str) -> None:
        changes, patience = 16, time.monotonic() + _READERS_PATIENCE
        while changes:
            try:
                os.link(temp, self.path)
                return
            except FileExistsError:
                pass
            except OSError as exc:
                raise _os_error(exc, f"cannot create pidfile {self.path}", self.path) from exc
            try:
                other = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                changes -= 1
                continue  # removed meanwhile: try to link again
            except OSError as exc:
                raise _os_error(exc, f"cannot open pidfile {self.path}", self.path) from exc
            try:
                contents = _read(self.path, other)
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not _same_file(other, self.path):
                        changes -= 1
                        continue  # replaced meanwhile, by a start that won: look again
                    if not share_locked_only(other):
                        raise self._held(contents) from None
                    if time.monotonic() > patience:
                        raise PidFileUnusable(
                            f"pidfile {self.path} is locked by another process that does not "
                            f"run it (a shared lock, held for over {_READERS_PATIENCE:g} s)",
                            reason="held",
                            path=self.path,
                        ) from None
                    logger.debug("pidfile %s: waiting for its readers' shared locks", self.path)
                    time.sleep(0.005)
                    continue
                if not _same_file(other, self.path):
                    changes -= 1
                    continue  # replaced between our open and our lock
                _warn_stale(self.path, contents)
                try:
                    os.rename(temp, self.path)
                except OSError as exc:
                    raise _os_error(exc, f"cannot replace pidfile {self.path}", self.path) from exc
                return
            finally:
                os.close(other)
        raise PidFileUnusable(f"pidfile {self.path} keeps changing", reason="io", path=self.path)

    def _held(self, contents: bytes) -> PidFileUnusable:
        text = contents.strip().decode("ascii", "replace")
        pid = int(text) if text.isdigit() else None
        holder = f"running process {pid}" if pid else "another process"
        return PidFileUnusable(
            f"pidfile {self.path} is held by {holder}", reason="held", path=self.path, pid=pid
        )

    def release(self) -> None:
        """Remove the pidfile if it still holds our PID, and unlock it; idempotent.

        In a forked child (a worker) it only closes the child's copy of the
        lock. Failures to remove the file are logged, not raised: this runs
        while the service exits.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.pid != os.getpid():
                return
            if not _same_file(fd, self.path):
                logger.warning("pidfile %s was replaced by another file; leaving it", self.path)
            elif (held := _held_pid(fd)) != self.pid:
                # Read through the descriptor opened at acquire(): once the
                # privileges are dropped, the path may no longer be readable.
                logger.warning(
                    "pidfile %s no longer holds pid %s (it holds %s); leaving it",
                    self.path,
                    self.pid,
                    held if held is not None else "no PID",
                )
            else:
                os.unlink(self.path)
                logger.debug("pidfile %s removed", self.path)
        except OSError as exc:
            logger.warning("could not remove pidfile %s: %s", self.path, exc.strerror)
        finally:
            os.close(fd)

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _same_file(fd: int, path: str) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _held_pid(fd: int) -> int | None:
    """The PID the pidfile open as ``fd`` holds, or None if it holds none."""
    try:
        return _parse_pid("", os.pread(fd, _MAX_PIDFILE + 1, 0))
    except PidFileUnusable:
        return None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _warn_stale(path: str, contents: bytes) -> None:
    try:
        pid = _parse_pid(path, contents)
    except PidFileUnusable as exc:
        logger.warning("replacing stale pidfile: %s", exc)
        return
    if _exists(pid):
        logger.warning("replacing stale pidfile %s: process %d runs but holds no lock", path, pid)
    else:
        logger.warning("replacing stale pidfile %s: process %d is not running", path, pid)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _os_error(exc: OSError, doing: str, path: str) -> PidFileUnusable:
    reason = "permission" if isinstance(exc, PermissionError) else "io"
    return PidFileUnusable(f"{doing}: {exc.strerror}", reason=reason, path=path)


_PID_TEXT = re.compile(rb"-?[0-9]+")
_MAX_PIDFILE = 64


def read_pid(path: StrPath) -> int:
    """Read the PID a pidfile names, without asking whether that process runs.

    Args:
        path: The pidfile.

    Returns:
        The PID, a positive integer no larger than the system allows.

    Raises:
        PidFileUnusable: ``reason`` is ``"missing"`` (no such file),
            ``"permission"`` (not allowed to read it), ``"malformed"`` (empty,
            not a decimal integer, not positive, beyond the system's largest
            PID, too large a file; each with its own message) or ``"io"``
            (not a regular file, or another operating-system error).
    """
    path = os.fspath(path)
    fd = _open(path)
    try:
        return _parse_pid(path, _read(path, fd))
    finally:
        os.close(fd)


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PidFileUnusable(
            f"pidfile {path} does not exist", reason="missing", path=path
        ) from None
    except OSError as exc:
        raise _os_error(exc, f"cannot read pidfile {path}", path) from exc


def _read(path: str, fd: int) -> bytes:
    """What the pidfile open at ``fd`` holds; anything but a regular file is refused."""
    try:
        mode = os.fstat(fd).st_mode
        data = os.pread(fd, _MAX_PIDFILE + 1, 0) if stat.S_ISREG(mode) else b""
    except OSError as exc:
        raise _os_error(exc, f"cannot read pidfile {path}", path) from exc
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise PidFileUnusable(f"pidfile {path} is {kind}", reason="io", path=path)
    return data


def _parse_pid(path: str, data: bytes) -> int:
    def malformed(problem: str) -> PidFileUnusable:
        return PidFileUnusable(f"pidfile {path} {problem}", reason="malformed", path=path)

    if len(data) > _MAX_PIDFILE:
        raise malformed(f"is too large to hold a PID (more than {_MAX_PIDFILE} bytes)")
    text = data.strip(b" \t\r\n")
    if not text:
        raise malformed("is empty")
    if not _PID_TEXT.fullmatch(text):
        raise malformed(f"does not hold a PID: {text[:40].decode('latin-1')!a}")
    pid = int(text)
    if pid <= 0:
        raise malformed(f"holds {pid}, not a positive PID")
    if pid > (highest := _pid_max()):
        raise malformed(f"holds {pid}, above the largest PID this system allows ({highest})")
    return pid


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 4_194_304  # PID_MAX_LIMIT on 64-bit Linux


def check(path: StrPath, *, require_lock: bool = True, signalable: bool = True) -> int:
    """Return the PID of the live process a pidfile names, or say why there is none.

    It takes no lock: on Linux the lock is looked up in ``/proc/locks``;
    elsewhere a shared lock is taken for a moment, which
    :meth:`PidFile.acquire` waits out. Reading never makes a start fail.

    Args:
        path: The pidfile.
        require_lock: Also require the pidfile to be locked, as
            :class:`PidFile` keeps it; a running process that does not hold
            the lock got the PID of a dead daemon.
        signalable: Also require that we may signal the process. False
            answers only whether it runs, even as another user (what
            ``archangel status`` asks).

    Returns:
        The PID of the running process.

    Raises:
        PidFileUnusable: The reasons of :func:`read_pid`, plus ``"stale"``
            (no such process, or it does not hold the lock) and, when
            ``signalable``, ``"permission"`` (the process runs as another
            user, so we may not signal it).
    """
    path = os.fspath(path)
    fd = _open(path)
    try:
        pid = _parse_pid(path, _read(path, fd))
        try:
            _kill(path, pid, 0)
        except PidFileUnusable as exc:
            if signalable or exc.reason != "permission":
                raise
        if require_lock and not exclusively_locked(fd, pid):
            raise PidFileUnusable(
                f"pidfile {path} is stale: process {pid} runs but does not hold its lock",
                reason="stale",
                path=path,
                pid=pid,
            )
    finally:
        os.close(fd)
    return pid


def send_signal(path: StrPath, signum: int) -> int:
    """Send a signal to the live process a pidfile names.

    Args:
        path: The pidfile.
        signum: The signal; 0 checks only, like :func:`check`.

    Returns:
        The PID signalled.

    Raises:
        PidFileUnusable: As :func:`check`.
    """
    path = os.fspath(path)
    pid = check(path)
    if signum:
        _kill(path, pid, signum)
    return pid


def _kill(path: str, pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise PidFileUnusable(
            f"pidfile {path} is stale: process {pid} is not running",
            reason="stale",
            path=path,
            pid=pid,
        ) from None
    except PermissionError:
        raise PidFileUnusable(
            f"not permitted to signal process {pid} named by pidfile {path}: "
            f"it runs as another user",
            reason="permission",
            path=path,
            pid=pid,
        ) from None
