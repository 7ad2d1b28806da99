"""asyncio streams served with every connection a process: ``App.serve_streams``.

An ``asyncio.start_server``-style handler, ``async def handler(reader,
writer)``, run per connection by :func:`stream_protocol_factory`, each
connection a :class:`StreamConnection` whose work is the handler's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgument
from ..kernel.adopt import ConnectionProcess
from ..kernel.manager import ProcessManager

__all__ = ["StreamConnection", "stream_protocol_factory"]


class StreamConnection(ConnectionProcess):
    """One connection of a streams server: its handler ``(reader, writer)`` is its work.

    * :meth:`stop`: the reader reaches end of file after the bytes already
      received (bytes arriving later are read and dropped); the writer still
      works, so the handler finishes the exchange in flight, sees EOF at its
      next read and returns.
    * When the handler returns (or raises), the connection is closed, after
      the buffered writes are flushed.
    * :meth:`kill` cancels the handler and aborts the transport.

    The process ends once the connection is closed and the handler has
    returned; if the handler raised, it ends with ``error``.
    """

    protocol: _StreamProtocol

    def _expected(self, exc: BaseException) -> bool:
        return self.protocol.stopped_reading and isinstance(exc, EOFError)

    def on_stop(self) -> None:
        """End of file for the reader; the handler finishes."""
        if self.transport is None:
            super().on_stop()
        elif not self._lost:
            self.protocol.stop_reading()


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """``asyncio.start_server``'s protocol, with the handler's task given to its process."""

    def __init__(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        process: StreamConnection,
        limit: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # A strong reference: the base class keeps only a weak one without a callback.
        self._archangel_reader = asyncio.StreamReader(limit=limit, loop=loop)
        super().__init__(self._archangel_reader, loop=loop)
        self._archangel_handler = handler
        self._archangel_process = process
        self._archangel_loop = loop
        self._archangel_writer: asyncio.StreamWriter | None = None
        self.stopped_reading = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        process = self._archangel_process
        if not process.attach(transport):
            return
        reader = self._archangel_reader
        writer = asyncio.StreamWriter(transport, self, reader, self._archangel_loop)  # type: ignore[arg-type]
        self._archangel_writer = writer
        task = self._archangel_loop.create_task(self._archangel_handler(reader, writer))
        process.add_task(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        if self._archangel_writer is not None:
            self._archangel_writer.close()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._archangel_process.detach(exc)

    def data_received(self, data: bytes) -> None:
        if not self.stopped_reading:
            super().data_received(data)

    def stop_reading(self) -> None:
        """End of file for the reader now; later bytes are dropped."""
        if not self.stopped_reading:
            self.stopped_reading = True
            self._archangel_reader.feed_eof()


def stream_protocol_factory(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    manager: ProcessManager,
    *,
    limit: int = 2**16,
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` running ``handler`` per connection.

    As ``asyncio.start_server(handler, limit=limit)``, except that each
    connection is a :class:`StreamConnection` registered with ``manager``.

    Raises:
        InvalidArgument: ``handler`` is not callable.
    """
    if not callable(handler):
        raise InvalidArgument(f"cannot serve streams with {handler!r}: not callable")
    loop = asyncio.get_running_loop()
    name = getattr(handler, "__qualname__", None) or type(handler).__name__
    register = manager.register

    def factory() -> asyncio.Protocol:
        process = register(StreamConnection(name=name))
        protocol = _StreamProtocol(handler, process, limit, loop)
        process.protocol = protocol
        return protocol

    return factory
