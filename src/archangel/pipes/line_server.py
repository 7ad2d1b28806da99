"""A line server: each line received on a TCP or Unix socket becomes an item.

::

    server = await line_server(manager, "127.0.0.1", 5140)   # or path="/run/app.sock"
    manager.spawn(Pipeline(server, parse, store))            # the server is the supply
    ...
    server.close()                                           # or stop the pipeline

Each accepted connection is a process of its own (a :class:`LineConnection`,
kind ``"conn"``) registered with the manager, so ``ps`` lists the peers and
``kill`` drops one. Lines from every connection go into one bounded buffer
that the pipeline reads as batches; when it is full, the connections that
fill it stop being read (``pause_reading``) until the pipeline catches up,
so a slow pipeline pushes back on the peers instead of growing memory.

Closing the server (:meth:`LineServer.close`, or the pipeline that reads it
stopping) stops accepting, closes every connection and ends the supply once
the lines already received have been handed over. Data still in flight on a
socket when it closes is dropped; a peer that wants every line counted
closes its side first.

What this is not: no framing other than newlines, no replies, no TLS (give
``ssl=`` through ``**server_options`` if you need it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import stat
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..kernel.holders import park, wake_all
from ..kernel.process import Process
from ._lines import LineBuffer, LineSupply

if TYPE_CHECKING:
    from ..kernel.manager import ProcessManager

__all__ = ["BUFFER", "LineConnection", "LineServer", "line_server"]

logger = logging.getLogger(__name__)

#: Default longest line a peer may send, in bytes (64 KiB; a longer one is
#: passed on cut); each connection holds up to this much. Not a file's bound
#: (``_lines.MAX_STREAM_LINE``, 1 MiB).
_MAX_PEER_LINE = 1 << 16
#: Default bound of the buffer of lines received and not yet handed over.
BUFFER = 4096


class LineConnection(Process, asyncio.Protocol):
    """One peer of a :class:`LineServer`: a process that splits what it receives into lines."""

    def __init__(self, server: LineServer) -> None:
        self.server = server
        self.lines = 0
        self._buffer = LineBuffer(server.encoding, server.errors, server.max_line)

    def connection_made(self, transport: Any) -> None:
        """Join the server's connections."""
        self.server._joined(self)

    def data_received(self, data: bytes) -> None:
        """Hand the complete lines to the server."""
        got = self._buffer.feed(data)
        if got:
            self.lines += len(got)
            self.server._push(got, self)

    def eof_received(self) -> bool:
        """The peer closed its side: its unterminated last line is a line."""
        got = self._buffer.flush()
        if got:
            self.lines += len(got)
            self.server._push(got, self)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        """Leave the server's connections."""
        self.server._left(self)

    def details(self) -> Mapping[str, Any]:
        """The peer (for TCP) and how many lines it sent."""
        return {**super().details(), "lines": self.lines}


class LineServer(LineSupply):
    """Lines received on a listening socket, as a supply; made by :func:`line_server`.

    Attributes:
        manager: The manager the connections are registered with.
        server: The :class:`asyncio.Server`, once listening.
        connections: The live :class:`LineConnection` processes.
        received: How many lines have been received in all.
    """

    def __init__(
        self,
        manager: ProcessManager,
        *,
        encoding: str | None = "utf-8",
        errors: str = "replace",
        max_line: int = _MAX_PEER_LINE,
        buffer: int = BUFFER,
    ) -> None:
        if buffer < 1:
            raise InvalidArgument(f"LineServer buffer must be >= 1, got {buffer}")
        self.manager = manager
        self.encoding = encoding
        self.errors = errors
        self.max_line = max_line
        self.buffer = buffer
        self.server: asyncio.Server | None = None
        self.connections: set[LineConnection] = set()
        self.received = 0
        self._path: str | None = None
        self._lines: collections.deque[Any] = collections.deque()
        self._paused: set[LineConnection] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self.server else "new"
        return f"<LineServer {self.address!r} connections={len(self.connections)} [{state}]>"

    @property
    def address(self) -> tuple[str, int] | str | None:
        """``(host, port)`` of the first listening socket, or the Unix socket's path."""
        if self._path is not None:
            return self._path
        if self.server is None or not self.server.sockets:
            return None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    async def start(
        self,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        path: str | os.PathLike[str] | None = None,
        **server_options: Any,
    ) -> None:
        """Listen on ``host:port`` (TCP), or on the Unix socket ``path``.

        Raises:
            OSError: The address cannot be bound (in use, say).
        """
        loop = asyncio.get_running_loop()
        factory = self.manager.register(self._connection)
        if path is not None:
            self._path = os.fspath(path)
            self.server = await loop.create_unix_server(factory, self._path, **server_options)
        else:
            self.server = await loop.create_server(factory, host, port, **server_options)

    def _connection(self) -> LineConnection:
        return LineConnection(self)

    # -- connections -------------------------------------------------------------

    def _joined(self, connection: LineConnection) -> None:
        if self._closed:
            connection.transport.close()
            return
        self.connections.add(connection)

    def _left(self, connection: LineConnection) -> None:
        self.connections.discard(connection)
        self._paused.discard(connection)
        self._wake()

    def _push(self, got: list[Any], connection: LineConnection) -> None:
        self._lines.extend(got)
        self.received += len(got)
        if len(self._lines) >= self.buffer and connection not in self._paused:
            connection.transport.pause_reading()
            self._paused.add(connection)
        self._wake()

    def _wake(self) -> None:
        wake_all(self._waiters)

    async def _changed(self) -> None:
        await park((self._waiters,))

    # -- the supply ----------------------------------------------------------------

    async def batches(self) -> AsyncGenerator[list[Any], None]:
        """Every line received and not yet handed over, as lists, until closed.

        Ending the iteration (a pipeline that stops) closes the server.
        """
        try:
            while True:
                if self._lines:
                    batch = list(self._lines)
                    self._lines.clear()
                    self._resume()
                    yield batch
                    continue
                if self._closed and not self.connections:
                    return
                await self._changed()
        finally:
            self.close()

    def _resume(self) -> None:
        paused, self._paused = self._paused, set()
        for connection in paused:
            with contextlib.suppress(Exception):  # closed meanwhile
                connection.transport.resume_reading()

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting and close every connection. Idempotent.

        The supply ends once the lines already received are handed over.
        """
        if self._closed:
            return
        self._closed = True
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.stop()
        if self._path is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(self._path).st_mode):
                    os.unlink(self._path)
        self._wake()

    async def wait_closed(self) -> None:
        """Wait until closed and every connection has ended."""
        while not (self._closed and not self.connections):
            await self._changed()
        if self.server is not None:
            await self.server.wait_closed()

    async def __aenter__(self) -> LineServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def line_server(
    manager: ProcessManager,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    path: str | os.PathLike[str] | None = None,
    encoding: str | None = "utf-8",
    errors: str = "replace",
    max_line: int = _MAX_PEER_LINE,
    buffer: int = BUFFER,
    **server_options: Any,
) -> LineServer:
    """Start a :class:`LineServer` listening on TCP ``host:port`` or the Unix socket ``path``.

    Returns once it listens; ``server.address`` tells where (port 0 picks a
    free port). Each connection is registered with ``manager``. The server is
    the supply: give it to a :class:`~archangel.Pipeline`, or ``async for``
    over it.

    Args:
        manager: Registers each connection as a process.
        host: The TCP address to bind (ignored with ``path``).
        port: The TCP port; 0 for a free one.
        path: A Unix socket path instead of TCP (removed again on close).
        encoding: How to decode lines; None yields bytes.
        errors: The decoding error handler.
        max_line: The longest line, in bytes (64 KiB); a longer one is passed on cut.
        buffer: How many received lines may wait before peers are paused.
        **server_options: Passed to ``loop.create_server`` or
            ``loop.create_unix_server`` (``ssl``, ``backlog``...).

    Raises:
        OSError: The address cannot be bound.
    """
    server = LineServer(
        manager, encoding=encoding, errors=errors, max_line=max_line, buffer=buffer
    )
    await server.start(host, port, path=path, **server_options)
    return server
