"""Clients for the console tests: an async raw client (``nc``) and a blocking one for threads."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import telnetlib3

from archangel import Process
from archangel.console import Console
from archangel.console.client import TelnetFilter

PROMPT = "archangel> "
TIMEOUT = 10.0

T = TypeVar("T")


class Light(Process):
    """A process with no transport: what the scale tests register by the thousand."""

    __slots__ = ()
    kind = "light"


async def write_buffers(console: Console) -> list[int]:
    """Bytes waiting in the write buffer of each of the console's connections.

    Read on the console's own loop (its transports belong to that thread).
    """

    async def read() -> list[int]:
        return [t.get_write_buffer_size() for t in list(console._transports)]

    assert console._loop is not None
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(read(), console._loop))


async def on_console(console: Console, fn: Callable[[], T]) -> T:
    """``fn()`` called on the console's own loop (its sessions and transports live there)."""

    async def call() -> T:
        return fn()

    assert console._loop is not None
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), console._loop))


async def settled(console: Console, timeout: float = TIMEOUT) -> None:
    """Wait until the console has no session task and no connection slot taken."""
    async with asyncio.timeout(timeout):
        while await on_console(console, lambda: console._table.taken or len(console._tasks)):
            await asyncio.sleep(0.01)


def clean(data: bytes, telnet: TelnetFilter) -> str:
    text, _ = telnet.feed(data)
    return text.decode("utf-8", "replace").replace("\r\n", "\n")


class RawClient:
    """What ``nc`` does, on the test's loop: whole lines in, bytes out, no negotiation."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.telnet = TelnetFilter()
        self.buffer = ""

    @classmethod
    async def open(cls, address: Any, *, banner: bool = True) -> RawClient:
        if isinstance(address, str):
            reader, writer = await asyncio.open_unix_connection(address)
        else:
            reader, writer = await asyncio.open_connection(*address)
        client = cls(reader, writer)
        if banner:
            await client.read_until(PROMPT)
        return client

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # the console may have reset it
            await self.writer.wait_closed()

    async def read_until(self, marker: str, timeout: float = TIMEOUT) -> str:
        """Text up to and including ``marker``; at EOF, whatever came."""
        async with asyncio.timeout(timeout):
            while marker not in self.buffer:
                data = await self.reader.read(65536)
                if not data:
                    text, self.buffer = self.buffer, ""
                    return text
                self.buffer += clean(data, self.telnet)
        end = self.buffer.index(marker) + len(marker)
        text, self.buffer = self.buffer[:end], self.buffer[end:]
        return text

    async def read_all(self, timeout: float = TIMEOUT) -> str:
        """Everything until the console closes the connection."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.buffer += clean(data, self.telnet)
        text, self.buffer = self.buffer, ""
        return text

    async def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def ask(self, line: str, timeout: float = TIMEOUT) -> str:
        """Send one line; return the reply (without the next prompt)."""
        await self.send(line + "\n")
        reply = await self.read_until(PROMPT, timeout)
        return reply.removesuffix(PROMPT).strip("\n")


class BlockingClient:
    """A raw client for threads: used while the test's (the app's) loop is blocked."""

    def __init__(self, address: Any) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(address)
        self.telnet = TelnetFilter()
        self.buffer = ""
        self.read_until(PROMPT)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def read_until(self, marker: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while marker not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {marker!r} in {self.buffer!r}")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed; got {self.buffer!r}")
            self.buffer += clean(data, self.telnet)
        end = self.buffer.index(marker) + len(marker)
        text, self.buffer = self.buffer[:end], self.buffer[end:]
        return text

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.read_until(PROMPT).removesuffix(PROMPT).strip("\n")


class Screen:
    """What a telnet client has received so far, consumed marker by marker."""

    def __init__(self, reader: telnetlib3.TelnetReader) -> None:
        self.reader = reader
        self.text = ""

    async def until(self, marker: str, timeout: float = TIMEOUT) -> str:
        async with asyncio.timeout(timeout):
            while marker not in self.text:
                chunk = await self.reader.read(4096)
                assert chunk, f"closed before {marker!r}; got {self.text!r}"
                self.text += chunk if isinstance(chunk, str) else chunk.decode()
        end = self.text.index(marker) + len(marker)
        seen, self.text = self.text[:end], self.text[end:]
        return seen


async def open_telnet(console: Console) -> tuple[Screen, telnetlib3.TelnetWriter]:
    """A telnetlib3 client at its first prompt, once the console echoes for it."""
    assert isinstance(console.address, tuple)
    reader, writer = await telnetlib3.open_connection(
        *console.address, connect_minwait=0.05, connect_maxwait=1.0
    )
    screen = Screen(reader)
    try:
        await screen.until(PROMPT)
        async with asyncio.timeout(TIMEOUT):  # the console negotiated WILL ECHO
            while not writer.will_echo:
                await asyncio.sleep(0.001)
    except BaseException:
        writer.close()
        raise
    return screen, writer
