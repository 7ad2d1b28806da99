"""The socket broker: the master binds each listening socket once, every worker serves it.

A worker's ``app.serve(...)`` sends the address it would bind over its
private socket pair with the master (``SOCK_SEQPACKET``: one message a
request); the master binds it the first time it is asked, keeps it, and
answers every worker with a duplicate of the same descriptor
(``SCM_RIGHTS``). The n-th request of a worker for one address gets the n-th
socket bound for it, so that port 0 means one port for all the workers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
from typing import Any

from ..errors import InvalidArgument

__all__ = ["Broker", "Client", "bind"]

logger = logging.getLogger(__name__)

#: The largest message: one request or one reply.
_MAX_MESSAGE = 65536


class Broker:
    """The master's side: the sockets bound so far, by address."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sockets: dict[tuple[Any, ...], list[socket.socket]] = {}
        self._unix_paths: list[str] = []

    def answer(self, channel: socket.socket, asked: dict[tuple[Any, ...], int]) -> None:
        """Answer the request waiting on ``channel``; ``asked`` counts that worker's requests."""
        try:
            data = channel.recv(_MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            return
        try:
            sock = self.socket_for(json.loads(data), asked)
        except (OSError, ValueError, InvalidArgument) as exc:
            reply = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            with contextlib.suppress(OSError):
                channel.send(reply)
            return
        with contextlib.suppress(OSError):
            socket.send_fds(channel, [b"{}"], [sock.fileno()])

    def socket_for(
        self, request: dict[str, Any], asked: dict[tuple[Any, ...], int]
    ) -> socket.socket:
        """The socket for ``request``: bound now if no worker asked for it before."""
        host, port, path = request.get("host"), request.get("port"), request.get("path")
        key = ("unix", path) if path is not None else ("inet", host, port or 0)
        index = asked.get(key, 0)
        asked[key] = index + 1
        socks = self.sockets.setdefault(key, [])
        if index < len(socks):
            return socks[index]
        sock = bind(host, port, path, request)
        socks.append(sock)
        if path is not None:
            self._unix_paths.append(path)
        logger.info("%s: master listening on %s", self.name, sock.getsockname())
        return sock

    def adopt(self, sockets: dict[tuple[Any, ...], list[socket.socket]]) -> None:
        """Take ``sockets`` (by address) as bound already: an old master's, on an upgrade."""
        for key, socks in sockets.items():
            self.sockets.setdefault(key, []).extend(socks)
            if key[0] == "unix":
                self._unix_paths.append(key[1])

    def close(self, *, unlink: bool = True) -> None:
        """Close every socket; with ``unlink``, remove the Unix sockets' files."""
        for socks in self.sockets.values():
            for sock in socks:
                sock.close()
        if unlink:
            for path in self._unix_paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def bind(host: Any, port: Any, path: Any, request: dict[str, Any]) -> socket.socket:
    """Bind and listen as ``loop.create_server`` would, for one address."""
    backlog = int(request.get("backlog") or 100)
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket, as asyncio removes one
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock
    if not isinstance(host, str | None):
        raise InvalidArgument(f"with workers, serve one host per server, not {host!r}")
    family = int(request.get("family") or 0)
    address: Any
    if not host and family in (0, socket.AF_INET6) and socket.has_dualstack_ipv6():
        fam, address = socket.AF_INET6, ("::", port or 0)
    else:
        found = socket.getaddrinfo(
            host or None, port or 0, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        fam, address = found[0][0], found[0][4]
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if request.get("reuse_port"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if not host else 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class Client:
    """A worker's end of the broker: asks the master for a listening socket."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self._name = name

    def __call__(self, host: Any, port: Any, path: Any, kwargs: dict[str, Any]) -> socket.socket:
        request = {
            "host": host,
            "port": port,
            "path": path,
            "backlog": kwargs.get("backlog"),
            "family": int(kwargs.get("family") or 0),
            "reuse_port": bool(kwargs.get("reuse_port")),
        }
        self._sock.send(json.dumps(request).encode())
        data, fds, _, _ = socket.recv_fds(self._sock, _MAX_MESSAGE, 1)
        if not fds:
            reply = json.loads(data or b"{}")
            where = path if path is not None else f"{host}:{port}"
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"app {self._name!r}: the master could not listen on {where}: "
                f"{reply.get('error', 'no answer')}",
            )
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return sock
