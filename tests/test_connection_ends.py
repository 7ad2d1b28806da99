"""How connections end at the edges: a ``connection_made`` that raises, a client that resets."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import struct
import warnings
from typing import Any

import pytest

from archangel import App, ExitReason, Process, ProcessManager, ProcessState
from archangel.kernel.adopt import AdoptedProtocol
from tests.helpers import serve, until


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Refusing(Process, asyncio.Protocol):
    """A protocol whose setup fails: ``connection_made`` raises."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        raise RuntimeError("no room for this client")


class DuckRefusing:
    """The same failure in a foreign (adopted) protocol."""

    def connection_made(self, transport: Any) -> None:
        raise RuntimeError("no room for this client")

    def data_received(self, data: bytes) -> None:
        pass


@pytest.mark.parametrize("factory", [Refusing, DuckRefusing], ids=["process", "adopted"])
async def test_a_connection_made_that_raises_is_a_failure_and_leaks_nothing(
    caplog: pytest.LogCaptureFixture, factory: Any
) -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(factory))
    fds = open_fds()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The client keeps its side open: only the server can end the connection.
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        await until(lambda: len(manager) == 0)
        writer.close()
        await writer.wait_closed()
        await until(lambda: open_fds() <= fds)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    [record] = manager.history
    assert record.exit_reason is ExitReason.ERROR and record.state is ProcessState.EXITED
    assert isinstance(record.error, RuntimeError) and "no room" in str(record.error)
    counters = manager.counters
    assert (counters["failed"], counters["running"]) == (1, 0)
    failures = [r for r in caplog.records if r.exc_info and "no room" in str(r.exc_info[1])]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # not again by the loop
    assert "pid 1" in failures[0].getMessage()
    if factory is DuckRefusing:
        assert record.name == "DuckRefusing"
    server.close()
    await server.wait_closed()


async def test_the_users_connection_lost_still_runs_after_a_failed_connection_made() -> None:
    lost: list[BaseException | None] = []

    class Cleans(Refusing):
        def connection_lost(self, exc: BaseException | None) -> None:
            lost.append(exc)  # releases what connection_made took

    manager = ProcessManager()
    server, port = await serve(manager.register(Cleans))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.read() == b""
    await until(lambda: lost == [None])
    assert manager.history[0].exit_reason is ExitReason.ERROR
    writer.close()
    server.close()
    await server.wait_closed()


def test_a_connection_made_that_raises_an_interrupt_still_records_it_and_raises() -> None:
    class Interrupted(Process, asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            raise KeyboardInterrupt

    class Transport:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    manager = ProcessManager()
    proc, transport = manager.register(Interrupted)(), Transport()
    with pytest.raises(KeyboardInterrupt):
        proc.connection_made(transport)
    assert transport.aborted and len(manager) == 0
    assert proc.exit_reason is ExitReason.ERROR


# -- a client that resets ---------------------------------------------------------------


class Streamer(Process, asyncio.Protocol):
    """Echoes; on ``stream`` it writes far more than the client reads."""

    def data_received(self, data: bytes) -> None:
        if data == b"stream":
            for _ in range(64):
                self.transport.write(b"x" * 65536)  # 4 MiB: most of it stays buffered
        else:
            self.transport.write(data)


async def reset_connection(port: int, manager: ProcessManager, *, writing: bool) -> Process:
    """Connect with a raw socket, wait for the server's process, then reset."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = manager.counters["started"]
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"stream" if writing else b"ping")
    await until(lambda: manager.counters["started"] > before and len(manager) > 0)
    proc = manager.processes()[-1]
    if writing:  # the server has data it could not send yet
        await until(
            lambda: proc.transport is not None and proc.transport.get_write_buffer_size() > 0
        )
    else:
        assert await loop.sock_recv(sock, 4) == b"ping"  # idle again
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with linger 0: an RST, not a FIN
    await proc.wait()
    return proc


@pytest.mark.parametrize("writing", [False, True], ids=["idle", "writing"])
async def test_a_client_reset_is_a_normal_end(writing: bool) -> None:
    manager = ProcessManager()
    seen: list[BaseException | None] = []

    class Watched(Streamer):
        def connection_lost(self, exc: BaseException | None) -> None:
            seen.append(exc)  # the protocol still sees what the transport said

    server, port = await serve(manager.register(Watched))
    proc = await reset_connection(port, manager, writing=writing)
    assert proc.exit_reason is ExitReason.NORMAL and proc.error is None
    assert manager.counters["failed"] == 0
    assert isinstance(seen[0], ConnectionResetError | BrokenPipeError), seen
    [record] = manager.history
    assert record.exit_reason is ExitReason.NORMAL and record.error is None
    server.close()
    await server.wait_closed()


async def test_a_reset_after_stop_stays_a_shutdown_and_an_adopted_reset_is_normal() -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(lambda: AdoptedProtocol(Streamer())))
    proc = await reset_connection(port, manager, writing=False)
    assert proc.exit_reason is ExitReason.NORMAL and manager.counters["failed"] == 0
    stopping = manager.register(Streamer())
    stopping.transport = _Resetting(stopping)
    stopping.stop()  # the graceful close is under way when the peer resets
    assert stopping.exit_reason is ExitReason.SHUTDOWN and stopping.error is None
    server.close()
    await server.wait_closed()


class _Resetting:
    """A transport whose graceful close meets a reset from the peer."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol

    def close(self) -> None:
        self.protocol.connection_lost(ConnectionResetError(104, "Connection reset by peer"))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


# -- a client that resets a streams handler ---------------------------------------------


async def test_a_client_reset_before_a_streams_handler_writes_is_a_normal_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handler's write after the reset raises: uvloop's RuntimeError, asyncio's reset."""
    app, gate = App("streams"), asyncio.Event()
    raised: list[BaseException] = []

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        await gate.wait()  # the client resets meanwhile
        try:
            writer.write(b"pong")  # uvloop: "...; the handler is closed"
            await writer.drain()  # asyncio: the reset, raised here
        except BaseException as exc:
            raised.append(exc)
            raise

    server = await app.serve_streams(reply, "127.0.0.1", 0)
    try:
        await _reset_before_the_reply(app, gate, caplog)
    finally:
        gate.set()
        server.close()
    assert raised and isinstance(raised[0], RuntimeError | ConnectionError), raised
    [record] = app.manager.history
    assert record.exit_reason is ExitReason.NORMAL and record.error is None, record
    assert app.manager.counters["failed"] == 0
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def _reset_before_the_reply(
    app: App, gate: asyncio.Event, caplog: pytest.LogCaptureFixture
) -> None:
    manager, loop = app.manager, asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, app.addresses[0])
    await loop.sock_sendall(sock, b"ping")
    await until(lambda: len(manager) == 1)
    [proc] = manager
    await until(lambda: proc.transport is not None)
    transport = proc.transport
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with caplog.at_level(logging.DEBUG, logger="archangel"):
        sock.close()  # with linger 0: an RST, not a FIN
        await until(transport.is_closing)
        gate.set()
        await asyncio.wait_for(proc.wait(), 10)
