"""Daemon mode: detach from the terminal and drop privileges.

Plain operating-system calls, no asyncio and no event loop: :func:`daemonize`
runs before any loop exists, :func:`drop_privileges` after the service has
bound its ports. The pidfile (:class:`~archangel.service.pidfile.PidFile`, and
:func:`~archangel.service.pidfile.read_pid`, :func:`~archangel.service.pidfile.check` and
:func:`~archangel.service.pidfile.send_signal` for the command line) is a concept of
its own in :mod:`archangel.service.pidfile`; this module re-exports those names, so
``archangel.service.daemon.PidFile`` keeps working. Nothing here speaks to systemd
(that is :mod:`archangel.service.systemd`); under systemd :func:`daemonize` does not
fork, because the service manager already runs us in the background.
"""

from __future__ import annotations

import enum
import fcntl
import grp
import logging
import os
import pwd
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn, Protocol

from ..errors import DaemonError
from .pidfile import PidFile as PidFile
from .pidfile import check as check
from .pidfile import read_pid as read_pid
from .pidfile import send_signal as send_signal
from .systemd import claim_listen_fds, under_systemd

__all__ = [
    "DaemonHandle",
    "PidFile",
    "check",
    "daemonize",
    "drop_privileges",
    "read_pid",
    "send_signal",
]

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]


class HasFileno(Protocol):
    """Anything with a ``fileno()``: a socket, a file object."""

    def fileno(self) -> int: ...


# The start-up pipe from the daemon to the process that launched it carries
# frames of one kind byte, a 4-byte big-endian length and a payload. Each
# frame is written with one write() below PIPE_BUF, so frames never interleave.
_PID, _READY, _FAIL = b"P", b"R", b"F"
_MAX_MESSAGE = 3000


class _Start(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    CLOSED = "closed"


class DaemonHandle:
    """What :func:`daemonize` returns in the daemon: how it tells its launcher it started.

    The process that called :func:`daemonize` waits until the daemon calls
    :meth:`ready` (it then exits with status 0) or :meth:`fail` (it prints the
    message to its stderr and exits with status 1). If the daemon exits or
    closes the handle first, the launcher reports that and exits with status 1.
    Only the first of :meth:`ready`, :meth:`fail` and :meth:`close` counts.
    A worker forked before that inherits the pipe: it should call
    :meth:`close`, which in a forked process only drops its own copy, so the
    launcher still hears of the daemon's death.

    Attributes:
        detached: True when :func:`daemonize` forked; False when it ran in the
            foreground (under systemd), where :meth:`ready` and :meth:`fail`
            only log.
        pid: The daemon's PID.
    """

    def __init__(self, *, detached: bool, fd: int | None) -> None:
        self.detached = detached
        self.pid = os.getpid()
        self._fd = fd
        self._state = _Start.STARTING

    def __repr__(self) -> str:
        mode = "detached" if self.detached else "foreground"
        return f"<DaemonHandle pid={self.pid} {mode} [{self._state.value}]>"

    def ready(self) -> None:
        """Tell the launching process that the daemon runs; it exits with status 0."""
        self._report(_READY, b"", _Start.READY)

    def fail(self, message: str) -> None:
        """Tell the launching process why the daemon could not start; it exits with status 1.

        Args:
            message: Printed by the launcher after ``daemon (pid N) could not
                start:``. The daemon should exit after calling this.
        """
        logger.debug("daemon %d could not start: %s", self.pid, message)
        self._report(_FAIL, message.encode("utf-8", "replace")[:_MAX_MESSAGE], _Start.FAILED)

    def close(self) -> None:
        """Close the start-up pipe without a word; the launcher reports an early exit."""
        self._report(b"", b"", _Start.CLOSED)

    def _report(self, kind: bytes, payload: bytes, state: _Start) -> None:
        if os.getpid() != self.pid:  # a forked worker: drop its copy of the pipe, say nothing
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
            return
        if self._state is not _Start.STARTING:
            return
        self._state = state
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if kind:
                _send(fd, kind, payload)
        except OSError as exc:
            logger.warning(
                "daemon %d could not report %s to its launcher: %s", self.pid, state.value, exc
            )
        finally:
            os.close(fd)


def daemonize(
    *,
    workdir: StrPath = "/",
    umask: int = 0o022,
    chroot: StrPath | None = None,
    stdin: StrPath | None = None,
    stdout: StrPath | None = None,
    stderr: StrPath | None = None,
    close_fds: bool = True,
    keep_fds: Iterable[int | HasFileno] = (),
    detach: bool | None = None,
) -> DaemonHandle:
    """Turn the calling process into a daemon; call it before any event loop or thread exists.

    In order: open the stdio files, chroot, chdir to ``workdir``, set the
    umask, then fork, ``setsid`` and fork again so the daemon is an orphan in
    a session of its own that can never reacquire a terminal; then point its
    stdio at the files and close every other descriptor but the ``keep_fds``
    and the sockets passed by socket activation (``$LISTEN_FDS`` when
    ``$LISTEN_PID`` is the calling process), whose ``$LISTEN_PID`` becomes
    the daemon's PID, so the daemon serves them. Errors up to the
    fork raise :class:`~archangel.errors.DaemonError` in the caller. Past it,
    the caller's process has become the launcher: it waits for the daemon's
    word through a pipe (see :class:`DaemonHandle`) and exits, so this call
    returns only in the daemon.

    Under systemd (``$NOTIFY_SOCKET`` or ``$INVOCATION_ID`` set) it does not
    fork, leaves stdio alone unless files are named (the journal reads it) and
    closes nothing (socket activation passes descriptors from 3 up); use
    ``Type=notify`` in the unit.

    Args:
        workdir: Directory to run in, inside the chroot if one is given.
        umask: File-creation mask of the daemon (and of its log files).
        chroot: Directory to chroot into (root only), after the stdio files
            are opened, so their paths are outside it.
        stdin: File to read stdin from; ``/dev/null`` when None and detaching.
        stdout: File to append stdout to; ``/dev/null`` when None and detaching.
        stderr: File to append stderr to; ``/dev/null`` when None and detaching.
            The launcher names it when the daemon dies before it is ready.
        close_fds: Close every descriptor above 2 but the ``keep_fds`` and
            socket-activated sockets. Open log handlers and files are closed
            too: configure logging after.
        keep_fds: Descriptors (or objects with ``fileno()``) to keep open, a
            listening socket say.
        detach: Fork (True) or stay in the foreground (False); None forks
            unless running under systemd.

    Returns:
        In the daemon, the handle to report readiness with.

    Raises:
        DaemonError: A stdio file cannot be opened, chroot or chdir failed, or
            the fork failed.
    """
    if detach is None:
        detach = not under_systemd()
        if not detach:
            logger.info("running under systemd: not forking, stdio left to the journal")
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    stdio = _open_stdio((stdin, stdout, stderr), umask, detach)
    try:
        if chroot is not None:
            _os_call(os.chroot, chroot, "chroot into")
        _os_call(os.chdir, workdir, "change directory to")
    except DaemonError:
        for _, fd in stdio:
            os.close(fd)
        raise
    os.umask(umask)
    launcher = os.getpid()
    pipe = _detach(stderr) if detach else None
    # Sockets passed by socket activation (systemd-socket-activate, an inetd of
    # its own) are the daemon's now: keep them, and name it in $LISTEN_PID.
    activated = claim_listen_fds(launcher) if detach else []
    for target, fd in stdio:
        os.dup2(fd, target)
        os.close(fd)
    if detach and close_fds:
        keep = {fd if isinstance(fd, int) else fd.fileno() for fd in keep_fds}
        _close_fds(keep | set(activated) | ({pipe} if pipe is not None else set()))
    return DaemonHandle(detached=detach, fd=pipe)


def _os_call(call: Callable[[StrPath], None], path: StrPath, doing: str) -> None:
    try:
        call(path)
    except OSError as exc:
        raise DaemonError(f"cannot {doing} {os.fspath(path)!s}: {exc.strerror}") from exc


def _open_stdio(
    paths: tuple[StrPath | None, ...], umask: int, detach: bool
) -> list[tuple[int, int]]:
    opened: list[tuple[int, int]] = []
    for target, path in enumerate(paths):
        if path is None and not detach:
            continue
        flags = os.O_RDONLY if target == 0 else os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(path or os.devnull, flags | os.O_CLOEXEC, 0o666 & ~umask)
            if fd <= 2:  # a closed stdio slot got reused; keep ours out of the way
                fd, old = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3), fd
                os.close(old)
        except OSError as exc:
            for _, fd in opened:
                os.close(fd)
            name = ("stdin", "stdout", "stderr")[target]
            raise DaemonError(f"cannot open {name} file {path!s}: {exc.strerror}") from exc
        opened.append((target, fd))
    return opened


def _detach(stderr: StrPath | None) -> int:
    """Double-fork; return the start-up pipe's write end in the daemon, exit elsewhere."""
    read_fd, write_fd = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise DaemonError(f"cannot fork the daemon: {exc.strerror}") from exc
    if child:
        os.close(write_fd)
        _launcher(read_fd, child, stderr)
    try:  # the first child: it must never return into the caller's code
        os.close(read_fd)
        os.setsid()
        if os.fork():
            os._exit(0)
    except BaseException as exc:
        try:
            _send(write_fd, _FAIL, f"cannot detach: {exc}".encode())
        finally:
            os._exit(1)
    try:
        _send(write_fd, _PID, str(os.getpid()).encode())
    except OSError:
        pass  # the launcher is gone; nobody is left to tell
    return write_fd


def _send(fd: int, kind: bytes, payload: bytes) -> None:
    os.write(fd, kind + len(payload).to_bytes(4, "big") + payload)


def _launcher(read_fd: int, child: int, stderr: StrPath | None) -> NoReturn:
    """The calling process after the fork: wait for the daemon's word, then exit."""
    try:
        os.waitpid(child, 0)
        status, message = _await_daemon(read_fd, stderr)
    except KeyboardInterrupt:
        status, message = 130, "interrupted while the daemon started; it may still be running"
    if message:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    os._exit(status)


def _await_daemon(read_fd: int, stderr: StrPath | None) -> tuple[int, str]:
    buffer = bytearray()
    daemon = "daemon"
    while True:
        while len(buffer) >= 5 and len(buffer) >= (end := 5 + int.from_bytes(buffer[1:5], "big")):
            kind, payload = bytes(buffer[:1]), bytes(buffer[5:end])
            del buffer[:end]
            if kind == _PID:
                daemon = f"daemon (pid {payload.decode()})"
            elif kind == _READY:
                return 0, ""
            elif kind == _FAIL:
                return 1, f"{daemon} could not start: {payload.decode('utf-8', 'replace')}"
        chunk = os.read(read_fd, 4096)
        if not chunk:
            hint = f"; see {os.fspath(stderr)!s}" if stderr is not None else ""
            return 1, f"{daemon} exited before it was ready{hint}"
        buffer += chunk


def _close_fds(keep: set[int]) -> None:
    try:
        top = max(os.sysconf("SC_OPEN_MAX"), 1024)
    except (OSError, ValueError):
        top = 65536
    low = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(top, low))


def drop_privileges(user: str | int | None = None, group: str | int | None = None) -> None:
    """Switch to an unprivileged user and group; call it after binding privileged ports.

    Sets the supplementary groups (the user's, through ``initgroups``), then
    the group, then the user, so no step is left privileged. Environment
    variables such as ``HOME`` are left alone. A no-op when both are None, or
    when the process already runs as the requested ids.

    Args:
        user: A user name or numeric id (an int or a string of digits).
        group: A group name or numeric id; the user's primary group when None.

    Raises:
        DaemonError: The user or group is unknown, or a numeric user has no
            database entry and no ``group`` was given, or the process is not
            root, or the switch failed.
    """
    if user is None and group is None:
        return
    uid, name, gid = _resolve_user(user) if user is not None else (None, None, None)
    if group is not None:
        gid = _resolve_group(group)
    if uid is not None and gid is None:
        raise DaemonError(f"user {uid} has no entry in the user database; name a group too")
    target = ", ".join(
        f"{kind} {ident}" for kind, ident in (("uid", uid), ("gid", gid)) if ident is not None
    )
    if os.geteuid() != 0:
        if uid in (None, os.getuid()) and gid in (None, os.getgid()):
            return
        raise DaemonError(f"cannot switch to {target}: not root (euid {os.geteuid()})")
    try:
        if gid is not None:
            if name is not None:
                os.initgroups(name, gid)
            else:
                os.setgroups([gid])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    except OSError as exc:
        raise DaemonError(f"cannot switch to {target}: {exc.strerror}") from exc
    logger.info("dropped privileges to %s", target)


def _resolve_user(user: str | int) -> tuple[int, str | None, int | None]:
    uid = _numeric(user, "user")
    try:
        entry = pwd.getpwuid(uid) if uid is not None else pwd.getpwnam(str(user))
    except KeyError:
        if uid is None:
            raise DaemonError(f"unknown user {user!r}") from None
        return uid, None, None
    return entry.pw_uid, entry.pw_name, entry.pw_gid


def _resolve_group(group: str | int) -> int:
    gid = _numeric(group, "group")
    if gid is not None:
        return gid  # a numeric gid need not have a database entry
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise DaemonError(f"unknown group {group!r}") from None


def _numeric(value: str | int, kind: str) -> int | None:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        return None
    if int(value) < 0:
        raise DaemonError(f"invalid {kind} id {value}: ids are not negative")
    return int(value)
