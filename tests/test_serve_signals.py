"""A real SIGTERM to a real App serving aiohttp, uvicorn, websockets and streams at once.

One child process per loop runs the App with ``app.run()``. Its slow handlers
announce that they started and then wait for the test's word on stdin, which
comes only after SIGTERM: so each request is in flight across the stop,
whatever the machine's speed. Meanwhile 50 aiohttp client connections send
requests without pause, and the test counts both sides: every request the
server's handler saw was answered in full; the others were refused or never
read (their connection closed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
import uvloop
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent

SERVICE = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiohttp import web
    from websockets.exceptions import ConnectionClosed
    from archangel import App, State

    app = App("frameworks", shutdown_timeout=20)
    release = asyncio.Event()   # the test's word, on stdin
    seen = []                   # ids of the load requests the aiohttp handler saw
    tasks = set()

    def say(*words):
        print(*words, flush=True)

    async def slow(where):
        say("started", where)
        await release.wait()
        await asyncio.sleep(0.05)  # and a little more, past the word

    # aiohttp: an Application, its signals, a slow and a fast handler
    async def aio_slow(request):
        await slow("aiohttp")
        return web.Response(text="aiohttp done")

    async def aio_load(request):
        seen.append(int(request.match_info["id"]))
        return web.Response(text="ok " + request.match_info["id"])

    webapp = web.Application()
    webapp.router.add_get("/slow", aio_slow)
    webapp.router.add_get("/load/{id}", aio_load)
    for signal_name in ("on_startup", "on_shutdown", "on_cleanup"):
        async def hook(webapp, signal_name=signal_name):
            say("aiohttp", signal_name)
        getattr(webapp, signal_name).append(hook)

    # uvicorn: an ASGI app with a lifespan
    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                say(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["path"] == "/slow":
            await slow("uvicorn")
        body = b"uvicorn done " + scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    # asyncio streams: a line in, a line out, until end of file
    async def lines(reader, writer):
        while line := await reader.readline():
            if line == b"slow\\n":
                await slow("streams")
            writer.write(b"streams done " + line)
            await writer.drain()
        say("streams handler saw EOF")

    # websockets: echo, slowly when asked
    async def echo(websocket):
        async for message in websocket:
            if message == "slow":
                await slow("websockets")
            try:
                await websocket.send(message)
            except ConnectionClosed:
                say("websockets handler returned after the close")
                return

    @app.bus.on(State.START)
    async def start():
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

        async def wait_for_word():
            await stdin.readline()
            release.set()

        # Not a process: a graceful stop would cancel it, and the word come to nothing.
        tasks.add(asyncio.ensure_future(wait_for_word()))
        ports = {
            "aiohttp": await app.serve(webapp, "127.0.0.1", 0),
            "h11": await app.serve_asgi(asgi, "127.0.0.1", 0, http="h11", lifespan="on"),
            "httptools": await app.serve_asgi(asgi, "127.0.0.1", 0, http="httptools"),
            "streams": await app.serve_streams(lines, "127.0.0.1", 0),
            "websockets": (await app.serve_websockets(echo, "127.0.0.1", 0)).server,
        }
        say(json.dumps({k: s.sockets[0].getsockname()[1] for k, s in ports.items()}))

    @app.bus.on(State.EXIT)
    def report():
        say("seen", json.dumps(seen))
        say("history", json.dumps(sorted(
            {r.exit_reason.value for r in app.manager.history if r.kind == "conn"})))

    sys.exit(app.run(loop=sys.argv[1]))
    """
)


class Child:
    """The service's process: its stdout read line by line, on the test's loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def line(self, prefix: str = "") -> str:
        """The next line of stdout that starts with ``prefix``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"the service ended; stdout so far: {self.lines}"
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line


async def start_service(tmp_path: Path, loop: str) -> Child:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        loop,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return Child(proc)


async def load(port: int, answered: list[int], errors: list[BaseException]) -> None:
    """50 connections asking without pause until each is refused or dropped."""
    ids = iter(range(1_000_000))
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while True:
                request = next(ids)
                try:
                    async with session.get(f"http://127.0.0.1:{port}/load/{request}") as response:
                        assert response.status == 200
                        assert await response.text() == f"ok {request}"
                except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                    errors.append(exc)
                    return
                answered.append(request)

        await asyncio.gather(*(worker() for _ in range(50)))


async def http_get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def test_sigterm_lets_every_request_in_flight_finish(tmp_path: Path) -> None:
    loop = "uvloop" if isinstance(asyncio.get_running_loop(), uvloop.Loop) else "asyncio"
    child = await start_service(tmp_path, loop)
    try:
        ports = json.loads(await child.line("{"))
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=False))
        async with session:
            # Idle keep-alive connections: one request done on each, then idle.
            idle = {}
            for name in ("aiohttp", "h11", "httptools"):
                reader, writer = await asyncio.open_connection("127.0.0.1", ports[name])
                writer.write(b"GET /load/-1 HTTP/1.1\r\nHost: x\r\n\r\n")
                head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
                assert head.startswith("http/1.1 200"), head
                length = int(head.split("content-length:")[1].split()[0])
                await reader.readexactly(length)
                idle[name] = (reader, writer)

            # One slow request in flight on each framework.
            slow = {
                name: asyncio.ensure_future(http_get(session, base[name] + "/slow"))
                for name in ("aiohttp", "h11", "httptools")
            }
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", ports["streams"])
            s_writer.write(b"fast\nslow\n")
            websocket = await ws_connect(f"ws://127.0.0.1:{ports['websockets']}/")
            await websocket.send("slow")
            started = {(await child.line("started ")).split()[1] for _ in range(5)}
            assert started == {"aiohttp", "uvicorn", "streams", "websockets"}
            assert await s_reader.readline() == b"streams done fast\n"

            # The load, and SIGTERM in the middle of it.
            answered: list[int] = []
            errors: list[BaseException] = []
            loading = asyncio.ensure_future(load(ports["aiohttp"], answered, errors))
            async with asyncio.timeout(30):
                while len(answered) < 300 and not loading.done():
                    await asyncio.sleep(0.01)
            child.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(loading, 30)

            # Idle connections close at once: the slow requests are still waiting.
            for name, (reader, writer) in idle.items():
                assert await asyncio.wait_for(reader.read(), 30) == b"", name
                writer.close()
            assert not any(task.done() for task in slow.values())
            # The WebSocket is closed with 1001 (going away), its handler still waiting.
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(websocket.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

            assert child.proc.stdin is not None
            child.proc.stdin.write(b"go\n")
            await child.proc.stdin.drain()
            for name, request in slow.items():
                status, body = await asyncio.wait_for(request, 30)
                assert (name, status) == (name, 200)
                assert body == ("aiohttp done" if name == "aiohttp" else "uvicorn done /slow")
            assert await s_reader.readline() == b"streams done slow\n"
            assert await s_reader.read() == b""  # EOF once its handler returned
            s_writer.close()
            await websocket.close()

        assert await asyncio.wait_for(child.proc.wait(), 30) == 0
        seen = json.loads((await child.line("seen ")).split(" ", 1)[1])
        reasons = json.loads((await child.line("history ")).split(" ", 1)[1])
    finally:
        if child.proc.returncode is None:
            child.proc.kill()
        stderr = (await child.proc.communicate())[1].decode()

    # Nothing the server accepted was lost: every request its handler saw was
    # answered in full, and every other one failed to connect or was never read.
    assert len(answered) >= 300
    assert set(seen) - {-1} == set(answered)
    assert len(errors) == 50  # each worker ended on a refused or dropped connection
    assert all(not isinstance(e, aiohttp.ClientPayloadError) for e in errors), errors
    # The frameworks' own lifecycle, at the App's: aiohttp's signals, the ASGI lifespan.
    order = [
        line
        for line in child.lines
        if line.startswith(("aiohttp on_", "lifespan.", "streams handler", "websockets handler"))
    ]
    assert order[:3] == ["aiohttp on_startup", "lifespan.startup", "lifespan.startup"]
    assert order.index("aiohttp on_shutdown") < order.index("aiohttp on_cleanup")
    assert order.count("lifespan.shutdown") == 2
    assert "streams handler saw EOF" in order
    assert "websockets handler returned after the close" in order
    assert set(reasons) <= {"shutdown", "normal"}, reasons  # none killed, none failed
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
