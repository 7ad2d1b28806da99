"""Real frameworks in-process, on both loops: a graceful stop finishes, a kill stops the handler.

aiohttp (its low-level server registered directly, an Application through
``App.serve``), uvicorn (h11 and httptools), websockets and asyncio streams;
real clients on 127.0.0.1. Each slow handler waits on an event the test sets,
so "still in flight" never depends on timing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp import web, web_server
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from archangel import App, ExitReason, InvalidArgument, ProcessManager, State
from archangel.errors import FrameworkError
from archangel.kernel.adopt import AiohttpConnection
from tests.helpers import serve, until

# Errors and warnings from these would be a framework (or archangel) telling
# of something unexpected: a handler dying at a write, a cancellation logged.
WATCHED = ("aiohttp", "uvicorn", "websockets", "archangel", "asyncio")


def watched(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.split(".")[0] in WATCHED
    ]


class Slow:
    """A handler's gate: ``started`` when it is in flight, ``go`` to let it finish."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.cancelled = False
        self.finished = False

    async def __call__(self) -> None:
        self.started.set()
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def post(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """Not retried by aiohttp's client when its connection drops (a GET would be)."""
    async with session.post(url) as response:
        return response.status, await response.text()


async def idle_keepalive(port: int, path: str = "/fast") -> asyncio.StreamReader:
    """A connection that made one request and now waits, kept alive (closed by the server)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    assert head.startswith("http/1.1 200"), head
    await reader.readexactly(int(head.split("content-length:")[1].split()[0]))
    writer.transport.set_write_buffer_limits(0)  # nothing to write: let the transport go
    _idle_writers.append(writer)
    return reader


_idle_writers: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_idle_writers() -> AsyncIterator[None]:
    yield
    while _idle_writers:
        _idle_writers.pop().close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# -- aiohttp ---------------------------------------------------------------------------


def aiohttp_handler(slow: Slow) -> Callable[[web.BaseRequest], Any]:
    async def handler(request: web.BaseRequest) -> web.Response:
        if request.path == "/slow":
            await slow()
        return web.Response(text=f"done {request.path}")

    return handler


async def test_aiohttp_shutdown_finishes_the_request_in_flight_and_closes_idle_ones(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # The kernel's own path: aiohttp's low-level server registered directly.
    manager, slow = ProcessManager(), Slow()
    aio = web_server.Server(aiohttp_handler(slow))
    server, port = await serve(manager.register(aio))
    idle = await idle_keepalive(port)
    request = asyncio.ensure_future(get(session, f"http://127.0.0.1:{port}/slow"))
    await slow.started.wait()
    assert all(isinstance(p, AiohttpConnection) for p in manager)

    stopping = asyncio.ensure_future(manager.shutdown(30))
    assert await asyncio.wait_for(idle.read(), 10) == b""  # idle: closed at once
    assert not request.done()
    slow.go.set()
    assert await asyncio.wait_for(request, 10) == (200, "done /slow")
    await asyncio.wait_for(stopping, 10)
    assert {r.exit_reason for r in manager.history} == {ExitReason.SHUTDOWN}
    server.close()
    assert watched(caplog) == []


async def test_aiohttp_kill_cancels_the_handler(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    manager, slow = ProcessManager(), Slow()
    server, port = await serve(manager.register(web_server.Server(aiohttp_handler(slow))))
    request = asyncio.ensure_future(post(session, f"http://127.0.0.1:{port}/slow"))
    await slow.started.wait()
    [process] = manager
    assert manager.kill(process.pid) is True  # type: ignore[arg-type]
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await asyncio.wait_for(request, 10)
    await process.wait()
    assert process.exit_reason is ExitReason.KILLED
    await until(lambda: slow.cancelled, timeout=10)
    slow.go.set()
    await asyncio.sleep(0.01)
    assert not slow.finished  # no ghost request running on, unseen
    server.close()
    assert watched(caplog) == []


@pytest.mark.parametrize("cancellation", [False, True], ids=["default", "handler_cancellation"])
async def test_an_aiohttp_client_reset_ends_the_connection_and_the_handler_as_aiohttp_says(
    caplog: pytest.LogCaptureFixture, cancellation: bool
) -> None:
    """The connection's process ends normally at the reset; its handler runs on
    (aiohttp's default) or is cancelled (``handler_cancellation=True``)."""
    manager, slow = ProcessManager(), Slow()
    aio = web_server.Server(aiohttp_handler(slow), handler_cancellation=cancellation)
    server, port = await serve(manager.register(aio))
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await asyncio.wait_for(slow.started.wait(), 10)
    [process] = manager
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with linger 0: an RST, not a FIN
    await asyncio.wait_for(process.wait(), 10)
    assert process.exit_reason is ExitReason.NORMAL and process.error is None
    assert manager.counters["failed"] == 0 and len(manager) == 0
    if cancellation:
        await until(lambda: slow.cancelled, timeout=10)
    else:
        await asyncio.sleep(0.01)
        assert not slow.cancelled  # still running, outside the table
        slow.go.set()
        await until(lambda: slow.finished, timeout=10)
    server.close()
    assert watched(caplog) == []


async def test_shutdown_timeout_kills_an_aiohttp_request_that_does_not_finish(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    manager, slow = ProcessManager(), Slow()
    server, port = await serve(manager.register(web_server.Server(aiohttp_handler(slow))))
    request = asyncio.ensure_future(post(session, f"http://127.0.0.1:{port}/slow"))
    await slow.started.wait()
    await manager.shutdown(timeout=0.05)  # the handler never gets its go
    assert slow.cancelled and not slow.finished
    assert manager.history[-1].exit_reason is ExitReason.KILLED
    with pytest.raises(aiohttp.ClientConnectionError):
        await asyncio.wait_for(request, 10)
    server.close()
    assert [m for m in watched(caplog) if "still running after" not in m] == []


async def test_app_serves_an_aiohttp_application_as_run_app_does(
    tmp_path: Path, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    app = App("web", shutdown_timeout=30, state_file=tmp_path / "s", runlog_file=tmp_path / "r")
    slow, seen = Slow(), []
    webapp = web.Application()
    webapp.router.add_get("/{path}", aiohttp_handler(slow))

    async def context(webapp: web.Application) -> AsyncIterator[None]:
        seen.append(f"context entered in {app.bus.state.name}")
        yield
        seen.append(f"context exited in {app.bus.state.name}")

    async def on_shutdown(webapp: web.Application) -> None:
        seen.append(f"on_shutdown, request in flight: {not slow.finished}")

    webapp.cleanup_ctx.append(context)
    webapp.on_shutdown.append(on_shutdown)

    @app.bus.on(State.START)
    async def start() -> None:
        await app.serve(webapp, "127.0.0.1", 0)
        await app.serve(webapp, "127.0.0.1", 0)  # a second address, the same startup

    running = asyncio.ensure_future(app.main())
    await app.bus.wait(State.RUN)
    (_, port1), (_, port2) = app.addresses
    assert await get(session, f"http://127.0.0.1:{port2}/fast") == (200, "done /fast")
    request = asyncio.ensure_future(get(session, f"http://127.0.0.1:{port1}/slow"))
    await slow.started.wait()
    app.request_stop()  # what the console's stop does
    await until(lambda: len(seen) == 2, timeout=10)
    slow.go.set()
    assert await asyncio.wait_for(request, 10) == (200, "done /slow")
    assert await asyncio.wait_for(running, 10) == 0
    assert seen == [
        "context entered in START",
        "on_shutdown, request in flight: True",
        "context exited in STOP",
    ]
    assert watched(caplog) == []


async def test_an_aiohttp_runner_with_signal_handling_is_refused(tmp_path: Path) -> None:
    runner = web.AppRunner(web.Application(), handle_signals=True)
    with pytest.raises(InvalidArgument, match="handle_signals=True"):
        await App("web").serve(runner, "127.0.0.1", 0)


# -- uvicorn ---------------------------------------------------------------------------


def asgi_app(slow: Slow) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": message["text"]})
            return
        if scope["path"] == "/slow":
            await slow()
        body = f"done {scope['path']}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(params=["h11", "httptools"])
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_uvicorn_shutdown_finishes_the_request_in_flight_and_closes_idle_ones(
    http: str, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    app, slow = App("asgi"), Slow()
    server = await app.serve_asgi(asgi_app(slow), "127.0.0.1", 0, http=http, lifespan="off")
    port = server.sockets[0].getsockname()[1]
    idle = await idle_keepalive(port)
    request = asyncio.ensure_future(get(session, f"http://127.0.0.1:{port}/slow"))
    await slow.started.wait()
    assert {p.name for p in app.manager} == {f"{'H11' if http == 'h11' else 'HttpTools'}Protocol"}

    stopping = asyncio.ensure_future(app.manager.shutdown(30))
    assert await asyncio.wait_for(idle.read(), 10) == b""
    assert not request.done()
    slow.go.set()
    assert await asyncio.wait_for(request, 10) == (200, "done /slow")
    await asyncio.wait_for(stopping, 10)
    assert {r.exit_reason for r in app.manager.history} == {ExitReason.SHUTDOWN}
    server.close()
    assert watched(caplog) == []


async def test_uvicorn_kill_cancels_the_asgi_application_quietly(
    http: str, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    app, slow = App("asgi"), Slow()
    server = await app.serve_asgi(asgi_app(slow), "127.0.0.1", 0, http=http, lifespan="off")
    port = server.sockets[0].getsockname()[1]
    request = asyncio.ensure_future(post(session, f"http://127.0.0.1:{port}/slow"))
    await slow.started.wait()
    [process] = app.manager
    process.kill()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await asyncio.wait_for(request, 10)
    await asyncio.wait_for(process.wait(), 10)  # once the ASGI task has ended too
    assert slow.cancelled and not slow.finished
    assert process.exit_reason is ExitReason.KILLED
    server.close()
    assert watched(caplog) == []


async def test_a_uvicorn_websocket_upgrade_is_the_same_process(
    http: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App("asgi")
    server = await app.serve_asgi(asgi_app(Slow()), "127.0.0.1", 0, http=http, lifespan="off")
    port = server.sockets[0].getsockname()[1]
    async with ws_connect(f"ws://127.0.0.1:{port}/ws") as websocket:
        await websocket.send("hello")
        assert await websocket.recv() == "hello"
        [process] = app.manager
        assert process.name == "WebSocketsSansIOProtocol"
        stopping = asyncio.ensure_future(app.manager.shutdown(30))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # uvicorn's
    await asyncio.wait_for(stopping, 10)
    assert [r.exit_reason for r in app.manager.history] == [ExitReason.SHUTDOWN]
    server.close()
    assert watched(caplog) == []


async def test_a_failed_lifespan_startup_is_a_framework_error() -> None:
    async def refuses(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    logging.getLogger("uvicorn.error").disabled = True  # it logs the failure itself
    try:
        with pytest.raises(FrameworkError, match="failed its lifespan startup"):
            await App("asgi").serve_asgi(refuses, "127.0.0.1", 0, lifespan="on")
    finally:
        logging.getLogger("uvicorn.error").disabled = False


# -- websockets ------------------------------------------------------------------------


def ws_handler(slow: Slow, ended: list[str]) -> Callable[[ServerConnection], Any]:
    async def echo(websocket: ServerConnection) -> None:
        try:
            async for message in websocket:
                if message == "slow":
                    await slow()
                await websocket.send(message)
        except ConnectionClosed:
            ended.append("closed")
        else:
            ended.append("returned")

    return echo


async def test_websockets_shutdown_closes_with_going_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, ended = App("ws"), []
    server = await app.serve_websockets(ws_handler(Slow(), ended), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with ws_connect(f"ws://127.0.0.1:{port}") as websocket:
        await websocket.send("hi")
        assert await websocket.recv() == "hi"
        [process] = app.manager
        assert process.name.endswith("echo") and process.info().details["peer"]
        await app.manager.shutdown(30)
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert ended == ["returned"]  # the handler had returned before the process ended
    assert process.exit_reason is ExitReason.SHUTDOWN
    server.server.close()
    assert watched(caplog) == []


async def test_websockets_kill_cancels_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    app, slow, ended = App("ws"), Slow(), []
    server = await app.serve_websockets(ws_handler(slow, ended), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with ws_connect(f"ws://127.0.0.1:{port}") as websocket:
        await websocket.send("slow")
        await slow.started.wait()
        [process] = app.manager
        process.kill()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(websocket.recv(), 10)
    await asyncio.wait_for(process.wait(), 10)
    assert slow.cancelled and ended == []
    assert process.exit_reason is ExitReason.KILLED
    server.server.close()
    assert watched(caplog) == []


# -- asyncio streams ---------------------------------------------------------------------


def stream_handler(slow: Slow, seen: list[str]) -> Callable[..., Any]:
    async def lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line == b"slow\n":
                await slow()
            if line == b"fail\n":
                raise RuntimeError("a handler bug")
            writer.write(b"got " + line)
            await writer.drain()
        seen.append("EOF")

    return lines


async def test_streams_stop_lets_the_handler_finish_and_see_eof(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, slow, seen = App("streams"), Slow(), []
    server = await app.serve_streams(stream_handler(slow, seen), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*app.addresses[0])
    writer.write(b"one\nslow\n")
    assert await reader.readline() == b"got one\n"
    await slow.started.wait()
    [process] = app.manager
    assert process.name.endswith("lines")
    stopping = asyncio.ensure_future(process.stop())  # what shutdown() calls
    writer.write(b"after the stop\n")  # read and dropped
    await asyncio.sleep(0.01)
    assert not stopping.done()
    slow.go.set()
    assert await reader.readline() == b"got slow\n"
    assert await reader.read() == b""  # closed once the handler returned
    await asyncio.wait_for(stopping, 10)
    assert seen == ["EOF"] and process.exit_reason is ExitReason.SHUTDOWN
    writer.close()
    server.close()
    assert watched(caplog) == []


async def test_streams_kill_cancels_the_handler_and_aborts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, slow, seen = App("streams"), Slow(), []
    server = await app.serve_streams(stream_handler(slow, seen), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*app.addresses[0])
    writer.write(b"slow\n")
    await slow.started.wait()
    [process] = app.manager
    process.kill()
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        pass  # aborted: a reset is what a kill looks like from outside
    await asyncio.wait_for(process.wait(), 10)
    assert slow.cancelled and seen == []
    assert process.exit_reason is ExitReason.KILLED
    writer.close()
    server.close()
    assert watched(caplog) == []


async def test_a_failing_streams_handler_ends_its_process_with_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("streams")
    server = await app.serve_streams(stream_handler(Slow(), []), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*app.addresses[0])
    writer.write(b"fail\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    await until(lambda: len(app.manager.history) == 1, timeout=10)
    [record] = app.manager.history
    assert record.exit_reason is ExitReason.ERROR and isinstance(record.error, RuntimeError)
    failures = [m for m in watched(caplog) if "failed" in m]
    assert failures == [f"archangel.kernel.adopt: pid 1 ({record.name}) failed"]  # logged once
    writer.close()
    server.close()


# -- misuse ------------------------------------------------------------------------------


async def test_a_handler_given_to_serve_is_refused_with_the_right_entry_point() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass

    with pytest.raises(InvalidArgument, match=r"coroutine function.*serve_streams\(\)"):
        await App("x").serve(handler, "127.0.0.1", 0)


@pytest.mark.parametrize("target", [object(), 42, "app:main"], ids=["object", "int", "str"])
async def test_serving_what_is_not_servable_lists_what_is(target: Any) -> None:
    app = App("x")
    with pytest.raises(InvalidArgument) as caught:
        await app.serve(target, "127.0.0.1", 0)
    message = str(caught.value)
    assert f"cannot serve {target!r}" in message and "<App 'x'" in message
    for accepted in (
        "protocol factory",
        "web.Application",
        "web.AppRunner",
        "web_server.Server",
        "uvicorn.Config",
        "serve_asgi()",
        "serve_streams()",
        "serve_websockets()",
    ):
        assert accepted in message, (accepted, message)
    assert app.addresses == [] and len(app.manager) == 0


async def test_an_asgi_application_given_to_serve_points_to_serve_asgi() -> None:
    class Asgi:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            pass

    with pytest.raises(InvalidArgument, match=r"ASGI application.*serve_asgi\(\) serves"):
        await App("x").serve(Asgi(), "127.0.0.1", 0)


@pytest.mark.parametrize(
    "setting",
    [{"workers": 4}, {"reload": True}, {"limit_max_requests": 100}],
    ids=["workers", "reload", "limit_max_requests"],
)
async def test_uvicorns_process_management_settings_are_refused_not_ignored(
    setting: dict[str, Any],
) -> None:
    app = App("x")
    [(name, value)] = setting.items()
    with pytest.raises(InvalidArgument, match=rf"{name}={value!r}.*reuse_port=True"):
        await app.serve_asgi(asgi_app(Slow()), "127.0.0.1", 0, **setting)
    with pytest.raises(InvalidArgument, match=rf"{name}={value!r}"):
        await app.serve(uvicorn.Config(asgi_app(Slow()), **setting), "127.0.0.1", 0)
    assert app.addresses == []
    server = await app.serve_asgi(asgi_app(Slow()), "127.0.0.1", 0, workers=1, lifespan="off")
    server.close()  # one worker is what the App does: accepted


def test_archangel_imports_no_framework() -> None:
    """aiohttp, uvicorn and websockets are optional: importing archangel loads none."""
    code = (
        "import sys, archangel, archangel.app, archangel.kernel.adopt\n"
        "import archangel.service.frameworks, archangel.service.asgi, archangel.service.streams\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'aiohttp', 'uvicorn', 'websockets', 'httptools'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


@pytest.mark.parametrize(
    ("missing", "serve"),
    [
        ("uvicorn", lambda app: app.serve_asgi(asgi_app(Slow()), "127.0.0.1", 0)),
        ("websockets.asyncio.server", lambda app: app.serve_websockets(print, "127.0.0.1", 0)),
    ],
)
async def test_a_missing_framework_is_named(
    monkeypatch: pytest.MonkeyPatch, missing: str, serve: Callable[[App], Any]
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    with pytest.raises(FrameworkError, match=r"needs (uvicorn|the websockets package)"):
        await serve(App("x"))
