"""The App in-process, on both loops: lifecycle, serving, stopping, dumps, signals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from pathlib import Path

import pytest

from archangel import App, ExitReason, InvalidArgument, Process, ProcessStateError, State
from tests.helpers import until


class Echo(Process, asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def make_app(tmp_path: Path, **kwargs: object) -> App:
    return App(
        "test-app",
        state_file=tmp_path / "state.json",
        runlog_file=tmp_path / "runlog.json",
        **kwargs,  # type: ignore[arg-type]
    )


async def start(app: App) -> asyncio.Task[int]:
    task = asyncio.ensure_future(app.main())
    await app.bus.wait(State.RUN, State.EXITED)
    return task


async def test_lifecycle_publishes_in_order_and_exits_zero(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    seen: list[State] = []
    for state in State:
        app.bus.subscribe(state, lambda s=state: seen.append(s))
    task = await start(app)
    assert seen == [State.ENTER, State.IDLE, State.START, State.RUN]
    app.request_stop()
    assert await task == 0
    assert seen[4:] == [State.STOP, State.IDLE, State.EXIT, State.EXITED]
    assert app.bus.state is State.EXITED
    with pytest.raises(ProcessStateError, match="has already run"):
        await app.main()


async def test_graceful_stop_closes_listener_first_and_runs_every_hook(tmp_path: Path) -> None:
    app = make_app(tmp_path, shutdown_timeout=5)
    hooks: list[int] = []

    class Hooked(Echo):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.at_exit(hooks.append, self.pid)

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve(Hooked, "127.0.0.1", 0)

    task = await start(app)
    [(host, port)] = app.addresses
    clients = [await asyncio.open_connection(host, port) for _ in range(20)]
    for reader, writer in clients:
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
    app.request_stop()
    assert await task == 0
    for reader, writer in clients:
        assert await reader.read() == b""
        writer.close()
    assert sorted(hooks) == list(range(1, 21))
    assert {r.exit_reason for r in app.manager.history} == {ExitReason.SHUTDOWN}
    with pytest.raises(OSError):
        await asyncio.open_connection(host, port)  # no longer accepting


async def test_quick_stop_during_a_stuck_graceful_drain(tmp_path: Path) -> None:
    app = make_app(tmp_path, shutdown_timeout=60)
    hooks: list[int] = []

    class Stuck(Echo):
        def on_stop(self) -> None:  # never finishes gracefully
            self.at_exit(hooks.append, self.pid)

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve(Stuck, "127.0.0.1", 0)

    task = await start(app)
    [(host, port)] = app.addresses
    _, writer = await asyncio.open_connection(host, port)
    await until(lambda: len(app.manager) == 1)
    app.request_stop()
    await app.bus.wait(State.STOP)
    await asyncio.sleep(0.05)
    assert not task.done()  # draining, and it would for 60 s
    app.request_stop(quick=True)
    assert await task == 0
    assert hooks == [1]  # the quick stop still ran the at-exit hook
    assert app.manager.history[-1].exit_reason is ExitReason.KILLED
    writer.close()


async def test_start_failure_walks_the_error_path_and_returns_one(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    app = make_app(tmp_path)

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve(Echo, "127.0.0.1", busy.getsockname()[1])

    seen: list[State] = []
    for state in (State.START_ERROR, State.STOP, State.EXIT, State.EXITED):
        app.bus.subscribe(state, lambda *_, s=state: seen.append(s))
    assert await app.main() == 1
    assert seen == [State.START_ERROR, State.STOP, State.EXIT, State.EXITED]
    assert app.bus.error is not None
    busy.close()


async def test_dumps_are_complete_json(tmp_path: Path) -> None:
    app = make_app(tmp_path)

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve(Echo, "127.0.0.1", 0)

    task = await start(app)
    [(host, port)] = app.addresses
    _, writer = await asyncio.open_connection(host, port)
    await until(lambda: len(app.manager) == 1)
    state_path = await app.dump("state")
    runlog_path = await app.dump("runlog")
    state = json.loads(Path(state_path).read_text())
    assert state["bus"] == {"state": "RUN"}
    assert state["addresses"] == [[host, port]]
    assert state["processes"][0]["kind"] == "conn"
    assert state["processes"][0]["details"]["peer"][0] == "127.0.0.1"
    assert any("main" in t["name"] or t["stack"] for t in state["tasks"])
    runlog = json.loads(Path(runlog_path).read_text())
    assert runlog["counters"]["started"] == 1
    assert set(runlog["rates"]) == {"since_start", "since_last"}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    with pytest.raises(InvalidArgument, match="can dump 'state' or 'runlog', not 'x'"):
        await app.dump("x")
    writer.close()
    app.request_stop()
    assert await task == 0


async def test_a_failing_dump_is_logged_and_the_service_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = App("dumpless", state_file=tmp_path / "missing-dir" / "state.json")
    task = await start(app)
    with caplog.at_level(logging.ERROR, logger="archangel.app"):
        signal.raise_signal(signal.SIGUSR2)
        await until(lambda: any("could not write" in r.getMessage() for r in caplog.records))
    assert app.bus.state is State.RUN
    signal.raise_signal(signal.SIGTERM)  # and real signals still work
    assert await task == 0


async def test_reload_keeps_connections_up(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    reloads: list[int] = []

    @app.bus.on("reload")
    def on_reload() -> None:
        reloads.append(len(app.manager))

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve(Echo, "127.0.0.1", 0)

    task = await start(app)
    [(host, port)] = app.addresses
    reader, writer = await asyncio.open_connection(host, port)
    await until(lambda: len(app.manager) == 1)
    signal.raise_signal(signal.SIGHUP)
    await until(lambda: reloads == [1])
    writer.write(b"still here")
    assert await reader.readexactly(10) == b"still here"
    writer.close()
    signal.raise_signal(signal.SIGINT)
    assert await task == 0


async def test_serves_a_unix_socket(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    path = str(tmp_path / "echo.sock")

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve(Echo, path=path)

    task = await start(app)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"unix")
    assert await reader.readexactly(4) == b"unix"
    assert app.manager.ps()[0].kind == "conn"
    writer.close()
    app.request_stop()
    assert await task == 0


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="shutdown_timeout must be >= 0"):
        App("x", shutdown_timeout=-1)
    with pytest.raises(InvalidArgument, match="loop must be 'uvloop' or 'asyncio'"):
        make_app(tmp_path).run(loop="tokio")
    with pytest.raises(ProcessStateError, match="is not running: nothing to stop"):
        make_app(tmp_path).request_stop()


def test_run_picks_the_loop_and_returns_the_status(tmp_path: Path) -> None:
    loops: list[str] = []
    for name in ("uvloop", "asyncio"):
        app = make_app(tmp_path)

        @app.bus.on(State.RUN)
        def ready(app: App = app) -> None:
            loops.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
            app.request_stop()

        assert app.run(loop=name) == 0
    assert loops == ["uvloop", "asyncio"]
