"""Tests for archangel.pipes.line_server: real connections on 127.0.0.1, each line an item."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from archangel import ProcessManager
from archangel.pipes.line_server import line_server
from archangel.pipes.pipeline import Pipeline
from tests.helpers import until


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_line_server_each_connection_is_a_process_each_line_an_item(
    family: str, tmp_path: Path
) -> None:
    manager = ProcessManager()
    path = tmp_path / "lines.sock" if family == "unix" else None
    server = await line_server(manager, "127.0.0.1", 0, path=path)
    got: asyncio.Queue[str] = asyncio.Queue()
    pipeline = manager.spawn(Pipeline(server, _upper, sink=got.put_nowait))

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if path is not None:
            return await asyncio.open_unix_connection(path)
        host, port = server.address  # type: ignore[misc]
        return await asyncio.open_connection(host, port)

    (_, one), (_, two) = await connect(), await connect()
    await send(one, b"hello\nwor")
    await send(two, b"from two\r\n")
    await send(one, b"ld\n")
    async with asyncio.timeout(5):
        received = sorted([await got.get() for _ in range(3)])
    assert received == ["FROM TWO", "HELLO", "WORLD"]
    conns = manager.ps(kind="conn")
    assert len(conns) == 2 and {c.name for c in conns} == {"LineConnection"}
    if family == "tcp":
        assert all(c.details["peer"][0] == "127.0.0.1" for c in conns)
    # a peer that leaves ends its process; its last line counts even without "\n"
    await send(two, b"bye")
    two.close()
    await two.wait_closed()
    async with asyncio.timeout(5):
        assert await got.get() == "BYE"
    await until(lambda: len(manager.ps(kind="conn")) == 1)
    # stopping the pipeline closes the server and the remaining connection
    await pipeline.stop()
    await server.wait_closed()
    assert server.closed and not server.connections and server.received == 4
    assert manager.ps() == []
    assert path is None or not path.exists()
    one.close()
    await one.wait_closed()


def _upper(line: str) -> tuple[str]:
    return (line.upper(),)


async def test_line_server_pushes_back_on_peers_when_its_buffer_is_full() -> None:
    manager = ProcessManager()
    async with await line_server(manager, buffer=10) as server:
        host, port = server.address  # type: ignore[misc]
        _, writer = await asyncio.open_connection(host, port)
        batches = server.batches()
        chunks = [b"".join(b"%d\n" % n for n in range(k, k + 100)) for k in range(0, 1000, 100)]
        await send(writer, chunks[0])
        await until(lambda: server._paused != set())  # nobody reads: the peer is paused
        for chunk in chunks[1:]:
            await send(writer, chunk)  # into the kernel's socket buffers
        for _ in range(10):
            await asyncio.sleep(0)
        assert server.received == 100  # not read while paused
        total = 0
        async with asyncio.timeout(5):
            while total < 1000:
                total += len(await anext(batches))
        writer.close()
        await writer.wait_closed()
        await batches.aclose()
    assert manager.ps() == []


async def test_line_server_refuses_an_address_in_use() -> None:
    manager = ProcessManager()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            await line_server(manager, "127.0.0.1", port)
