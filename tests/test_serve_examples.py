"""The serving examples run as their docstrings say: a real service, client and signal.

Each example runs on the loop the test runs on, so both loops are covered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import uvloop
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedOK

ROOT = Path(__file__).resolve().parent.parent


class Example:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []

    @classmethod
    async def start(cls, name: str, *args: str) -> tuple[Example, str]:
        """Run an example on the test's own kind of loop; return it and its address."""
        loop = "uvloop" if isinstance(asyncio.get_running_loop(), uvloop.Loop) else "asyncio"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            f"examples/{name}",
            "--port",
            "0",
            "--loop",
            loop,
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        example = cls(proc)
        banner = await example.line("serving on ")
        return example, banner.split()[-1]

    async def line(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while raw := await self.proc.stdout.readline():
                self.out.append(raw.decode().rstrip("\n"))
                if self.out[-1].startswith(prefix):
                    return self.out[-1]
        raise AssertionError(f"no line {prefix!r}: {self.out}")

    async def stop(self, sig: signal.Signals | None = signal.SIGTERM) -> str:
        """Signal it (unless ``sig`` is None); return its stderr once it exited 0."""
        if sig is not None:
            self.proc.send_signal(sig)
        out, err = await asyncio.wait_for(self.proc.communicate(), 30)
        self.out += out.decode().splitlines()
        assert self.proc.returncode == 0, err.decode()
        assert "Traceback" not in err.decode(), err.decode()
        return err.decode()


async def slow_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_http_aiohttp_example_answers_the_request_in_flight_at_sigterm() -> None:
    example, url = await Example.start("http_aiohttp.py")
    assert await slow_get(url + "/") == (200, "hello\n")
    request = asyncio.ensure_future(slow_get(url + "/slow?seconds=0.3"))
    await example.line("slow request: 0.3 s")
    await example.stop()
    assert await request == (200, "done after 0.3 s\n")
    assert example.out[:2] == ["aiohttp on_startup", f"serving on {url}"]
    assert example.out[-3:-1] == ["aiohttp on_shutdown", "aiohttp on_cleanup"]
    assert example.out[-1].startswith("stopped: {'started': 2, 'exited': 2, 'killed': 0")


async def test_http_asgi_example_answers_the_request_in_flight_at_sigint() -> None:
    example, url = await Example.start("http_asgi.py", "--http", "h11")
    request = asyncio.ensure_future(slow_get(url + "/slow?seconds=0.3"))
    await example.line("slow request: 0.3 s")
    await example.stop(signal.SIGINT)
    assert await request == (200, "done after 0.3 s\n")
    assert example.out[0] == "lifespan.startup"
    assert example.out[-2:] == [
        "lifespan.shutdown",
        "stopped: {'started': 1, 'exited': 1, 'killed': 0, 'failed': 0, 'running': 0}",
    ]


async def test_ws_chat_example_closes_with_going_away() -> None:
    example, url = await Example.start("ws_chat.py")
    async with ws_connect(url) as alice, ws_connect(url) as bob:
        await alice.send("hi")
        assert (await bob.recv()).endswith(": hi")
        assert (await alice.recv()).endswith(": hi")
        example.proc.send_signal(signal.SIGTERM)
        for websocket in (alice, bob):
            with pytest.raises(ConnectionClosedOK) as closed:
                await asyncio.wait_for(websocket.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    await example.stop(None)  # signalled already (a second SIGTERM could come after EXIT)
    assert example.out[-1].startswith("stopped: {'started': 2, 'exited': 2, 'killed': 0")


async def test_streams_lines_example_finishes_the_line_in_flight() -> None:
    example, address = await Example.start("streams_lines.py", "--slow", "0.3")
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"hello\nslow\n")
    assert await reader.readline() == b"HELLO\n"
    await example.line("slow line")
    await example.stop()
    assert await reader.readline() == b"SLOW\n"
    assert await reader.read() == b""
    writer.close()
