"""The App in-process, on both loops: lifecycle, serving, stopping, dumps, signals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from archangel import App, ExitReason, InvalidArgument, Process, ProcessStateError, State
from archangel.app import EXIT_FORCED, EXIT_OK
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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"shutdown_timeout": "30"},
            "shutdown_timeout must be a number of seconds >= 0, got '30'",
        ),
        (
            {"shutdown_timeout": True},
            "shutdown_timeout must be a number of seconds >= 0, got True",
        ),
        (
            {"shutdown_timeout": None},
            "shutdown_timeout must be a number of seconds >= 0, got None",
        ),
        ({"shutdown_timeout": float("nan")}, "shutdown_timeout must be >= 0, got nan"),
        ({"shutdown_timeout": -0.5}, "shutdown_timeout must be >= 0, got -0.5"),
        ({"history": "10"}, "history must be an int >= 0, got '10'"),
        ({"history": 2.5}, "history must be an int >= 0, got 2.5"),
        ({"history": False}, "history must be an int >= 0, got False"),
        ({"history": -1}, "history must be >= 0, got -1"),
    ],
)
def test_app_arguments_are_checked_naming_the_argument_and_value(
    arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        App("web", **arguments)  # type: ignore[arg-type]
    assert str(caught.value) == f"App 'web': {message}"


def test_app_numbers_that_are_numbers_are_taken() -> None:
    assert App("web", shutdown_timeout=0).shutdown_timeout == 0
    assert App("web", shutdown_timeout=2.5).shutdown_timeout == 2.5
    assert repr(App("web", history=0).manager.history) == "<History 0 of at most 0>"
    with pytest.raises(InvalidArgument, match="App name must be a str, got 5"):
        App(5)  # type: ignore[arg-type]


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


def test_relative_paths_are_made_absolute_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = App("rel", state_file="s.json", runlog_file=Path("logs/r.json"), pidfile="rel.pid")
    monkeypatch.chdir("/")  # as a daemon does
    assert app.state_file == str(tmp_path / "s.json")
    assert app.runlog_file == str(tmp_path / "logs" / "r.json")
    assert app.pidfile is not None
    assert app.pidfile.path == str(tmp_path / "rel.pid")


async def test_dumps_at_once_never_show_a_reader_half_a_file(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    task = await start(app)
    for _ in range(2000):  # a state file of some size, so that writes take a while
        app.manager.register(Process)()
    target = Path(app.state_file)
    invalid: list[str] = []
    most_temporaries = 0
    reads = 0
    done = threading.Event()

    def read_while_dumping() -> None:
        nonlocal most_temporaries, reads
        while not done.is_set():
            temporaries = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
            most_temporaries = max(most_temporaries, len(temporaries))
            try:
                text = target.read_text()
            except FileNotFoundError:
                continue
            reads += 1
            try:
                json.loads(text)
            except ValueError:
                invalid.append(text[-40:])

    reader = threading.Thread(target=read_while_dumping)
    reader.start()
    try:
        for _ in range(5):
            for _ in range(10):
                signal.raise_signal(signal.SIGUSR2)
            paths = await asyncio.gather(*(app.dump("state") for _ in range(10)))
            assert set(paths) == {str(target)}
    finally:
        done.set()
        await asyncio.to_thread(reader.join)
    assert invalid == []
    assert reads > 0
    assert most_temporaries <= 1  # one write of a file at a time
    assert json.loads(target.read_text())["processes_total"] == 2000
    app.request_stop(quick=True)
    assert await task == 0
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


async def test_a_dump_asked_for_during_a_write_is_written_again_after_it(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    task = await start(app)
    taken: list[float] = []
    runlog = app.runlog

    def counted() -> dict[str, object]:
        data = runlog()
        taken.append(data["time"])
        return data

    app.runlog = counted  # type: ignore[assignment]
    first = asyncio.ensure_future(app.dump("runlog"))
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(app.dump("runlog")) for _ in range(5)]
    await asyncio.gather(first, *later)
    # The first write, then at most one more for the five asked for meanwhile,
    # taken after the first was written: the file holds the newest.
    assert 1 <= len(taken) <= 2
    assert json.loads(Path(app.runlog_file).read_text())["time"] == taken[-1]
    app.request_stop()
    assert await task == 0


async def test_a_stop_during_start_cancels_the_start_and_walks_down(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    seen: list[State] = []
    for state in State:
        app.bus.subscribe(state, lambda *_, s=state: seen.append(s))
    cancelled = asyncio.Event()

    @app.bus.on(State.START)
    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.ensure_future(app.main())
    await app.bus.wait(State.START)
    await asyncio.sleep(0)
    app.request_stop()
    assert await task == 0
    assert cancelled.is_set()
    up = [State.ENTER, State.IDLE, State.START]
    assert seen == [*up, State.STOP, State.IDLE, State.EXIT, State.EXITED]  # no RUN
    assert app.bus.error is None


async def test_at_exit_a_hung_reload_is_cancelled_and_a_dump_is_finished(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    hung = asyncio.Event()

    @app.bus.on("reload")
    async def wait_forever() -> None:
        hung.set()
        await asyncio.Event().wait()

    task = await start(app)
    reload = app.reload()
    await hung.wait()
    dump = asyncio.ensure_future(app.dump("state"))
    await asyncio.sleep(0)  # the dump was asked for
    app.request_stop()
    assert await task == 0
    assert reload.cancelled()
    assert json.loads(Path(app.state_file).read_text())["name"] == "test-app"  # written
    assert await dump == app.state_file


# -- a stop always ends: shutdown_timeout bounds the whole of it ---------------------------


async def cancel_leftovers() -> None:
    """Cancel what a forced stop left running on the test's loop, and let it end.

    A forced stop may leave work behind by design (a subscriber that ignores
    its cancellation; the manager's shutdown, while it still waits for a hook).
    ``app.run()`` ends it with its loop; a test on a shared loop does it here.
    """
    leftovers = asyncio.all_tasks() - {asyncio.current_task()}
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.wait(leftovers, timeout=10)


@pytest.mark.parametrize("hook", ["slow", "never returns"])
async def test_an_async_at_exit_hook_cannot_outlast_the_shutdown_timeout(
    tmp_path: Path, hook: str
) -> None:
    """Today a 20 s hook makes the stop take 20 s, and one that never returns, forever."""
    app = make_app(tmp_path, shutdown_timeout=0.5, pidfile=tmp_path / "app.pid")
    exited: list[State] = []
    app.bus.subscribe(State.EXIT, lambda: exited.append(State.EXIT))

    async def at_exit() -> None:
        if hook == "slow":
            await asyncio.sleep(20)
        else:
            await asyncio.Event().wait()

    @app.bus.on(State.START)
    def spawn() -> None:
        process = app.manager.spawn(asyncio.Event().wait, name="worker")
        process.at_exit(at_exit)

    task = await start(app)
    app.request_stop()
    try:
        async with asyncio.timeout(15):  # the hook alone would take 20 s, or forever
            assert await task == EXIT_FORCED
    finally:
        await cancel_leftovers()
    assert exited == [State.EXIT]  # EXIT subscribers still ran
    assert app.bus.state is State.EXITED
    assert not (tmp_path / "app.pid").exists()  # and the App's own EXIT work


async def test_a_stop_subscriber_past_the_deadline_is_cancelled_and_the_drain_gets_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tmp_path, shutdown_timeout=0.2)
    budgets: list[float] = []
    shutdown = app.manager.shutdown

    async def recorded(timeout: float = 30.0) -> object:
        budgets.append(timeout)
        return await shutdown(timeout)

    app.manager.shutdown = recorded  # type: ignore[method-assign]
    later: list[str] = []

    @app.bus.on(State.STOP)
    async def flush_to_a_dead_backend() -> None:
        await asyncio.Event().wait()

    app.bus.subscribe(State.STOP, lambda: later.append("STOP 70"), priority=70)
    app.bus.subscribe(State.EXIT, lambda: later.append("EXIT"))
    task = await start(app)
    with caplog.at_level(logging.WARNING):
        app.request_stop()
        async with asyncio.timeout(15):
            assert await task == EXIT_FORCED
    assert budgets == [0.0]  # the subscriber spent the whole budget: nothing left
    assert later == ["STOP 70", "EXIT"]
    [cut] = [r.getMessage() for r in caplog.records if "at the deadline" in r.getMessage()]
    assert "flush_to_a_dead_backend" in cut
    assert "of <State.STOP> still running at the deadline" in cut
    assert "test_app.py:" in cut  # where it was awaiting
    assert "stop forced" in caplog.text


async def test_the_drain_gets_what_is_left_of_the_budget(tmp_path: Path) -> None:
    app = make_app(tmp_path, shutdown_timeout=30)
    budgets: list[float] = []
    shutdown = app.manager.shutdown

    async def recorded(timeout: float = 30.0) -> object:
        budgets.append(timeout)
        return await shutdown(timeout)

    app.manager.shutdown = recorded  # type: ignore[method-assign]

    @app.bus.on(State.STOP)
    async def slow_flush() -> None:
        await asyncio.sleep(0.2)

    task = await start(app)
    app.request_stop()
    assert await task == EXIT_OK
    [budget] = budgets
    assert 0 < budget < 30 - 0.1  # measured from the stop request, not from the drain


async def test_the_stop_clock_starts_at_the_first_request(tmp_path: Path) -> None:
    app = make_app(tmp_path, shutdown_timeout=30)
    budgets: list[float] = []
    shutdown = app.manager.shutdown

    async def recorded(timeout: float = 30.0) -> object:
        budgets.append(timeout)
        return await shutdown(timeout)

    app.manager.shutdown = recorded  # type: ignore[method-assign]
    gate = asyncio.Event()
    app.bus.subscribe(State.STOP, gate.wait)
    task = await start(app)
    app.request_stop()
    await app.bus.wait(State.STOP)
    await asyncio.sleep(0.2)
    app.request_stop()  # again: the clock does not restart
    gate.set()
    assert await task == EXIT_OK
    assert budgets[0] < 30 - 0.1


async def test_processes_killed_at_the_deadline_make_the_stop_forced(tmp_path: Path) -> None:
    """Needs ``ProcessManager.shutdown`` to say it killed (False): issue 10's kernel part."""
    app = make_app(tmp_path, shutdown_timeout=0.1)

    class Stubborn(Echo):
        def on_stop(self) -> None:  # never ends gracefully
            pass

    @app.bus.on(State.START)
    async def bind() -> None:
        await app.serve(Stubborn, "127.0.0.1", 0)

    task = await start(app)
    [(host, port)] = app.addresses
    _, writer = await asyncio.open_connection(host, port)
    try:
        await until(lambda: len(app.manager) == 1)
        app.request_stop()
        async with asyncio.timeout(15):
            assert await task == EXIT_FORCED
        assert app.manager.history[-1].exit_reason is ExitReason.KILLED
    finally:
        writer.close()


# -- reloads never overlap -------------------------------------------------------------


async def test_reloads_asked_for_during_a_reload_coalesce_into_one_after_it(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    running: list[int] = []
    gates = [asyncio.Event(), asyncio.Event()]
    started = [asyncio.Event(), asyncio.Event()]
    overlapped = False

    @app.bus.on("reload")
    async def reread() -> None:
        nonlocal overlapped
        overlapped = overlapped or bool(running)
        number = len(started) - sum(not e.is_set() for e in started)
        running.append(number)
        started[number].set()
        await gates[number].wait()
        running.remove(number)

    task = await start(app)
    first = app.reload()
    await started[0].wait()
    again = [app.reload() for _ in range(3)]  # three more while the first runs
    assert all(t is first for t in again)  # one task runs them
    await asyncio.sleep(0.05)
    assert not started[1].is_set()  # not side by side
    gates[0].set()
    await started[1].wait()
    gates[1].set()
    await first
    assert not overlapped
    assert sum(e.is_set() for e in started) == 2  # three asked for: one more ran
    app.request_stop()
    assert await task == EXIT_OK


# -- the App's own hooks: one table, in the code and in the docs ------------------


def _hooks_table(text: str) -> list[tuple[str, int, str]]:
    """The rows of the "the App's own work" table in reStructuredText ``text``."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if "the App's own work" in line)
    end = lines.index(lines[head + 1], head + 2)  # the closing rule
    rows: list[tuple[str, int, str]] = []
    for line in lines[head + 2 : end]:
        state, _, rest = line.partition(" ")
        if state:
            priority, what = rest.split(None, 1)
            rows.append((state, int(priority), what.strip()))
        else:  # a continuation line
            state, priority, what = rows.pop()
            rows.append((state, priority, f"{what} {line.strip()}"))
    return rows


def test_the_hooks_table_in_the_docstring_and_the_docs_is_the_one_subscribed(
    tmp_path: Path,
) -> None:
    import archangel.app

    table = [(state.name, priority, what) for state, priority, _, what in App._HOOKS]
    assert _hooks_table(archangel.app.__doc__ or "") == table
    docs = Path(__file__).parent.parent / "docs" / "app.rst"
    assert _hooks_table(docs.read_text()) == table

    # Each hook runs where its row says: just after a probe subscribed at its
    # priority - 0.5 and just before one at its priority + 0.5.
    app = make_app(tmp_path)

    class Serving:  # what _add_serving subscribes of a served framework
        target = None

        async def stopping(self) -> None: ...

        async def stopped(self) -> None: ...

    serving = Serving()
    app._add_serving(serving)  # type: ignore[arg-type]
    hooks = {}
    for state, priority, hook, _ in App._HOOKS:
        owner, _, name = hook.rpartition(".")
        callback = getattr(serving if owner == "Serving" else app, name)
        before, after = (lambda: None), (lambda: None)
        app.bus.subscribe(state, before, priority=priority - 0.5)
        app.bus.subscribe(state, after, priority=priority + 0.5)
        hooks[callback] = (state, before, after)
    for callback, (state, before, after) in hooks.items():
        order = list(app.bus.subscribers(state))
        assert order[order.index(callback) - 1 : order.index(callback) + 2] == [
            before,
            callback,
            after,
        ]
    own = {hook for _, _, hook, _ in App._HOOKS}
    for state in State:
        for callback in app.bus.subscribers(state):
            if getattr(callback, "__self__", None) is app:
                assert callback.__name__ in own, f"{callback} is not in App._HOOKS"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"console": "s3cret"}, r"console must be True, False or a mapping of options such as"),
        ({"console": 5}, r"console must be True, False or a mapping"),
        ({"console": {"prot": 1}}, r"console has no option 'prot'; the options are host, port,"),
        (
            {"web": "yes"},
            r"web must be True, False or a mapping of options such as \{'port': 9100",
        ),
        ({"web": {"prot": 1}}, r"web has no option 'prot'; the options are host, port, token,"),
    ],
)
def test_console_and_web_options_are_checked_when_the_app_is_made(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=rf"^App 'a': {message}"):
        App("a", **options)  # type: ignore[arg-type]


async def test_serve_refuses_a_port_that_is_none_and_no_address_at_all() -> None:
    app = App("s")

    class Quiet(Process, asyncio.Protocol):
        pass

    for host, port in (
        ("127.0.0.1", "abc"),
        ("127.0.0.1", -5),
        ("127.0.0.1", 65536),
        ("127.0.0.1", True),
    ):
        with pytest.raises(
            InvalidArgument, match=rf"cannot serve on port {port!r}: a port is an int"
        ):
            await app.serve(Quiet, host, port)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"cannot serve: give a host and a port"):
        await app.serve(Quiet)
    server = await app.serve(Quiet, "127.0.0.1", "0")  # type: ignore[arg-type]  # as the environment gives it
    assert server.sockets[0].getsockname()[1] > 0
    assert app.servers == [server]
    server.close()
    await server.wait_closed()
