"""Where the console listens: the loopback check and the Unix socket file.

Plain functions over sockets and paths; the console's lifecycle that uses
them is in :mod:`archangel.console.server`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat

from ..errors import ConsoleError

__all__ = ["bind_unix", "is_loopback", "remove_unix"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine.

    ``localhost`` and loopback IP literals are; anything else (``0.0.0.0``,
    ``""``, other names, which are not resolved) is not.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_unix(path: str) -> tuple[socket.socket, int]:
    """A Unix stream socket bound at ``path`` with mode 0600, and the file's inode.

    A stale socket file (nobody listening) is replaced.

    Raises:
        ConsoleError: ``path`` is a live socket or not a socket at all.
        OSError: Binding failed (no such directory, permission denied...).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise ConsoleError(f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # a stale socket: nobody listens on it
            else:
                raise ConsoleError(f"{path} is in use by a live listener")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # On Linux the socket file takes the mode of the socket's inode: set it
        # before bind() so the file never exists with a wider mode (whatever the
        # umask); chmod after bind() covers the systems where it does not.
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(path)
        os.chmod(path, 0o600)
        inode = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    return sock, inode


def remove_unix(path: str, inode: int) -> None:
    """Remove the socket file at ``path`` if it is still ours (same inode)."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass
