"""Tests for archangel.kernel.adopt: foreign protocols (aiohttp's, duck-typed, buffered)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web, web_server

from archangel import ExitReason, ProcessInfo, ProcessManager
from archangel.kernel.adopt import AdoptedProtocol
from tests.helpers import serve, until

# -- adoption of foreign protocols -------------------------------------------------


async def test_adopts_aiohttp_low_level_server_under_http_load() -> None:
    manager = ProcessManager()
    seen_live: list[list[ProcessInfo]] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        seen_live.append(manager.ps())
        return web.Response(text=f"hello {request.path}")

    aio_server = web_server.Server(handler)
    server, port = await serve(manager.register(aio_server))

    async def load(session: aiohttp.ClientSession, n: int) -> list[str]:
        out = []
        for i in range(n):
            async with session.get(f"http://127.0.0.1:{port}/{i}") as response:
                out.append(await response.text())
        return out

    connector = aiohttp.TCPConnector(limit=20, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(*(load(session, 25) for _ in range(20)))
    assert sum(len(r) for r in results) == 500
    assert results[0][3] == "hello /3"

    # While requests were served, the handler's connection was a managed process.
    assert all(info and info[0].kind == "conn" for info in seen_live)
    assert {i.name for infos in seen_live for i in infos} == {"RequestHandler"}
    started = manager.counters["started"]
    assert 1 <= started <= 20  # keep-alive connections, one process each

    await until(lambda: len(manager) == 0, timeout=10)
    assert manager.counters["exited"] == started
    assert all(r.exit_reason is not None for r in manager.history)
    await aio_server.shutdown(timeout=1)
    server.close()
    await server.wait_closed()


async def test_adopted_protocol_can_be_killed() -> None:
    class Plain(asyncio.Protocol):
        lost: list[BaseException | None] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())  # type: ignore[attr-defined]

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.append(exc)

    manager = ProcessManager()
    server, port = await serve(manager.register(Plain))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"abc")
    assert await reader.readexactly(3) == b"ABC"
    [proc] = manager
    assert isinstance(proc, AdoptedProtocol) and proc.name == "Plain"
    assert isinstance(proc.protocol, Plain)
    assert proc.info().details["peer"][0] == "127.0.0.1"
    proc.kill()
    assert await reader.read() == b""
    await proc.wait()
    assert proc.exit_reason is ExitReason.KILLED and Plain.lost == [None]
    writer.close()
    server.close()
    await server.wait_closed()


async def test_adopts_a_duck_typed_protocol() -> None:
    """An object with only connection_made and data_received, over a real socket."""

    class Duck:
        def connection_made(self, transport: asyncio.Transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())

    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    manager = ProcessManager()
    server, port = await serve(manager.register(Duck))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(5):
            writer.write(b"quack")
            assert await reader.readexactly(5) == b"QUACK"
            [proc] = manager
            assert isinstance(proc, AdoptedProtocol) and proc.name == "Duck"
            writer.write_eof()  # no eof_received: asyncio.Protocol's default closes
            assert await reader.read() == b""
            await proc.wait()  # no connection_lost either
        assert proc.exit_reason is ExitReason.NORMAL
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
        loop.set_exception_handler(None)
    assert errors == []


async def test_adopted_buffered_protocol() -> None:
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(64)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.transport.write(bytes(self.buf[:nbytes]))  # type: ignore[attr-defined]

    manager = ProcessManager()
    server, port = await serve(manager.register(Buffered))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    assert manager[1].name == "Buffered"
    writer.close()
    await until(lambda: len(manager) == 0)
    assert manager.history[-1].exit_reason is ExitReason.NORMAL
    server.close()
    await server.wait_closed()
