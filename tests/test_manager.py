"""ProcessManager: register, PIDs, lookup, ps, history, kill, shutdown, counters."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import traceback
import weakref
from collections import Counter
from typing import Any

import pytest

from archangel import (
    AlreadyRegistered,
    ArchangelError,
    ExitReason,
    InvalidArgument,
    ManagerClosed,
    NotAProcess,
    NotRegistered,
    Process,
    ProcessInfo,
    ProcessManager,
    ProcessState,
    TaskProcess,
)
from tests.helpers import serve, until


class Echo(Process, asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Idle(Process):
    """A process with no transport: kill and stop end it at once."""


# -- register ---------------------------------------------------------------


def test_register_instance_assigns_increasing_pids() -> None:
    manager = ProcessManager()
    procs = [manager.register(Idle()) for _ in range(3)]
    assert [p.pid for p in procs] == [1, 2, 3]
    assert all(p.manager is manager for p in procs)
    assert all(p.started is not None for p in procs)
    procs[2].kill()
    assert manager.register(Idle()).pid == 4  # never reused


def test_two_managers_share_nothing() -> None:
    a, b = ProcessManager(), ProcessManager()
    pa, pb = a.register(Idle()), b.register(Idle())
    assert pa.pid == pb.pid == 1
    assert list(a) == [pa] and list(b) == [pb]
    pa.kill()
    assert len(a) == 0 and len(b) == 1
    assert a.counters["exited"] == 1 and b.counters["exited"] == 0


def test_register_class_factory_and_decorator() -> None:
    manager = ProcessManager()
    factory = manager.register(Echo)
    assert isinstance(factory(), Echo)

    @manager.register
    def make_echo() -> Echo:
        return Echo()

    proc = make_echo()
    assert proc.pid == 2
    assert make_echo.__name__ == "make_echo"
    assert [p.pid for p in manager] == [1, 2]


@pytest.mark.parametrize(
    ("target", "error"),
    [(42, NotAProcess), ("Echo", NotAProcess), (None, NotAProcess)],
)
def test_register_rejects_non_callables(target: Any, error: type[Exception]) -> None:
    manager = ProcessManager()
    with pytest.raises(error, match=r"cannot register .*not a Process and not callable"):
        manager.register(target)
    assert issubclass(error, ArchangelError) and issubclass(error, TypeError)


def test_factory_product_that_is_not_a_protocol_is_refused() -> None:
    factory = ProcessManager().register(lambda: 42)
    with pytest.raises(NotAProcess, match="cannot adopt 42"):
        factory()


def test_registering_twice_is_an_error() -> None:
    a, b = ProcessManager(), ProcessManager()
    proc = a.register(Idle())
    with pytest.raises(AlreadyRegistered, match=r"pid=1 .* already registered with"):
        a.register(proc)
    with pytest.raises(AlreadyRegistered):
        b.register(proc)
    assert len(b) == 0


async def test_registering_into_a_shut_down_manager_is_an_error() -> None:
    manager = ProcessManager()
    await manager.shutdown()
    assert manager.closed
    with pytest.raises(ManagerClosed, match=r"\[closed\]> is shutting down: cannot register"):
        manager.register(Idle())
    coro_fn_ran = False

    async def job() -> None:
        nonlocal coro_fn_ran
        coro_fn_ran = True

    with pytest.raises(ManagerClosed):
        manager.spawn(job)  # the refused coroutine is closed: no "never awaited" warning
    assert not coro_fn_ran


# -- lookup, ps, history --------------------------------------------------------


def test_lookup_and_unknown_pids() -> None:
    manager = ProcessManager()
    proc = manager.register(Idle())
    assert manager[1] is proc and 1 in manager and 2 not in manager
    with pytest.raises(NotRegistered, match="no pid 999 was ever issued") as info:
        manager[999]
    assert isinstance(info.value, LookupError)
    proc.kill()
    with pytest.raises(NotRegistered, match="pid 1 has exited"):
        manager[1]
    assert manager.kill(999) is False  # documented no-op
    assert manager.kill(1) is False


async def test_ps_filters_by_kind_and_snapshots() -> None:
    manager = ProcessManager()
    manager.register(Echo())
    task = manager.spawn(asyncio.sleep(10), name="sleeper")
    infos = manager.ps()
    assert [(i.pid, i.kind, i.name) for i in infos] == [
        (1, "conn", "Echo"),
        (2, "task", "sleeper"),
    ]
    assert all(isinstance(i, ProcessInfo) for i in infos)
    [only] = manager.ps(kind="task")
    assert only.pid == 2 and only.state is ProcessState.RUNNING
    assert only.details["task"] == "sleeper"
    assert manager.ps(kind="pipeline") == []
    task.kill()
    await task.wait()
    await manager.shutdown(timeout=1)


async def test_history_is_bounded_and_keeps_records_not_protocols() -> None:
    manager = ProcessManager(history=3)
    server, port = await serve(manager.register(Echo))
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    await until(lambda: manager.counters["exited"] == 5)
    assert [r.pid for r in manager.history] == [3, 4, 5]
    assert all(
        isinstance(r, ProcessInfo) and r.state is ProcessState.EXITED for r in manager.history
    )
    assert all(r.ended is not None and r.ended >= r.started for r in manager.history)  # type: ignore[operator]

    # A finished protocol is freed: the manager keeps nothing that refers to it.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await until(lambda: 6 in manager)
    ref = weakref.ref(manager[6])
    writer.close()
    await writer.wait_closed()
    await until(lambda: 6 not in manager)
    await asyncio.sleep(0)
    gc.collect()
    assert ref() is None
    assert manager.history[-1].pid == 6
    server.close()
    await server.wait_closed()


class BadRequest(Process, asyncio.Protocol):
    """Fails on its first data, holding a buffer (what a leak would keep)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = bytearray(1 << 20)

    def data_received(self, data: bytes) -> None:
        raise ValueError("bad request")


async def test_history_keeps_no_failed_protocol_or_task_alive() -> None:
    """A failure's traceback holds the frames of data_received or the task: not kept."""
    manager = ProcessManager()
    server, port = await serve(manager.register(BadRequest))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await until(lambda: 1 in manager and manager[1].state is ProcessState.RUNNING)
        protocol = weakref.ref(manager[1])
        writer.write(b"x")
        await until(lambda: 1 not in manager)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()

    async def failing() -> None:
        raise KeyError("lost")

    task = manager.spawn(failing)
    task_ref = weakref.ref(task)
    await task.wait()
    del task
    await asyncio.sleep(0)
    gc.collect()
    assert protocol() is None
    assert task_ref() is None
    failed_protocol, failed_task = manager.history
    assert failed_protocol.exit_reason is failed_task.exit_reason is ExitReason.ERROR
    assert isinstance(failed_protocol.error, ValueError)
    assert isinstance(failed_task.error, KeyError)
    # The traceback still formats, with the file and line of the failure.
    formatted = "".join(traceback.format_exception(failed_task.error))
    assert "in failing" in formatted and 'raise KeyError("lost")' in formatted


async def test_history_leaves_another_task_sharing_the_error_running() -> None:
    """The same exception, raised again in a task that caught it and went on: left alone."""
    manager = ProcessManager()
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def dies() -> None:
        await shared

    async def survives() -> str:
        try:
            await shared
        except ValueError:
            pass
        # Suspended here, with this frame in the shared error's traceback, while
        # the failed process is recorded.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "survived"

    failed = manager.spawn(dies)
    survivor = asyncio.ensure_future(survives())
    await asyncio.sleep(0)
    shared.set_exception(ValueError("shared"))
    await failed.wait()
    async with asyncio.timeout(5):
        assert await survivor == "survived"
    assert manager.history[-1].exit_reason is ExitReason.ERROR


def test_a_kind_changed_after_registering_still_exits() -> None:
    manager = ProcessManager()
    moved = manager.register(Idle())
    moved.kind = "custom"  # after registering: counted as its class's kind
    hooks: list[str] = []
    moved.at_exit(hooks.append, "moved")
    moved.kill()
    assert hooks == ["moved"]
    assert moved.state is ProcessState.EXITED and 1 not in manager
    assert manager.history[-1].kind == "custom"
    assert manager.counters["kinds"] == {
        "conn": {"started": 1, "exited": 1, "killed": 1, "failed": 0, "running": 0}
    }

    class Labelled(Process):
        def __init__(self) -> None:
            self.kind = "labelled"

    other = ProcessManager()
    relabelled = other.register(Labelled())
    relabelled.kind = "relabelled"  # neither its class's kind nor its own is counted
    relabelled.kill()
    assert relabelled.state is ProcessState.EXITED and len(other) == 0
    totals = other.counters
    assert (totals["started"], totals["exited"], totals["running"]) == (1, 1, 0)


def test_history_zero_keeps_nothing() -> None:
    manager = ProcessManager(history=0)
    manager.register(Idle()).kill()
    assert list(manager.history) == []
    with pytest.raises(ValueError, match="history must be >= 0"):
        ProcessManager(history=-1)
    with pytest.raises(InvalidArgument, match=r"^ProcessManager 'm': history must be an int"):
        ProcessManager(history="5", name="m")  # type: ignore[arg-type]


# -- spawn -----------------------------------------------------------------------


async def test_spawn_coroutines_functions_and_task_processes() -> None:
    manager = ProcessManager()

    async def answer() -> int:
        return 42

    by_fn = manager.spawn(answer)
    by_coro = manager.spawn(answer(), name="coro")
    await by_fn.wait()
    await by_coro.wait()
    assert by_fn.kind == "task" and by_fn.result == 42 and by_coro.name == "coro"
    assert by_fn.exit_reason is ExitReason.NORMAL

    async def fail() -> None:
        raise KeyError("lost")

    failed = manager.spawn(fail)
    await failed.wait()
    assert failed.exit_reason is ExitReason.ERROR and isinstance(failed.error, KeyError)

    class Worker(TaskProcess):
        async def main(self) -> str:
            return "done"

    worker = manager.spawn(Worker())
    await worker.wait()
    assert worker.result == "done" and worker.name == "Worker"
    counters = manager.counters["kinds"]["task"]
    assert counters == {"started": 4, "exited": 4, "killed": 0, "failed": 1, "running": 0}

    with pytest.raises(NotAProcess, match="cannot spawn 7"):
        manager.spawn(7)  # type: ignore[arg-type]
    with pytest.raises(ArchangelError, match="has already been started"):
        worker.start()


def test_spawn_without_a_running_loop_registers_nothing() -> None:
    manager = ProcessManager()
    ran: list[str] = []

    async def job() -> None:
        ran.append("job")

    with pytest.raises(
        RuntimeError, match=r"cannot spawn <\S*job pid=None task \[new\]>: no running"
    ):
        manager.spawn(job)
    with pytest.raises(RuntimeError, match="no running event loop"):
        manager.spawn(job())  # the coroutine is closed: no "never awaited" warning
    worker = TaskProcess(job())
    with pytest.raises(RuntimeError, match="no running event loop"):
        manager.spawn(worker)
    with pytest.raises(RuntimeError, match="no running event loop"):
        worker.start()
    assert worker.state is ProcessState.NEW and worker.pid is None and worker.task is None
    worker.kill()  # never started: exits at once, closing its coroutine
    gc.collect()
    assert len(manager) == 0 and manager.ps() == []
    assert manager.counters["started"] == 0
    assert ran == []


async def test_task_pids_names_the_tasks_of_live_spawned_processes_only() -> None:
    manager = ProcessManager()
    release = asyncio.Event()

    async def waits() -> None:
        await release.wait()

    first, second = manager.spawn(waits), manager.spawn(waits(), name="second")
    manager.register(Process())  # not a task: never in the map
    unmanaged = asyncio.ensure_future(release.wait())
    pids = manager.task_pids()
    assert pids == {first.task: first.pid, second.task: second.pid}
    pids.clear()  # a copy: the manager's own map is untouched
    assert len(manager.task_pids()) == 2

    killed_early = manager.spawn(waits)
    killed_early.kill()  # before its first step
    await killed_early.wait()
    assert killed_early.task not in manager.task_pids()
    release.set()
    await first.wait()
    await second.wait()
    await unmanaged
    assert manager.task_pids() == {}


async def test_killing_a_task_cancels_it() -> None:
    manager = ProcessManager()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    proc = manager.spawn(forever)
    await asyncio.sleep(0)
    assert manager.kill(proc.pid) is True  # type: ignore[arg-type]
    await proc.wait()
    assert cancelled.is_set()
    assert proc.exit_reason is ExitReason.KILLED
    assert manager.counters["killed"] == 1


async def test_a_task_that_raises_cancelled_error_itself_failed_and_was_not_killed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 12: a coroutine's own CancelledError was recorded as ``killed``."""
    manager = ProcessManager()

    async def gives_up() -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError("my own reasons")

    async def awaits_a_cancelled_task() -> None:
        inner = asyncio.get_running_loop().create_future()
        inner.cancel()
        await inner  # the inner future's cancellation, let through

    with caplog.at_level(logging.ERROR, logger="archangel.kernel.task"):
        own = manager.spawn(gives_up)
        through = manager.spawn(awaits_a_cancelled_task)
        await own.wait()
        await through.wait()
    for proc in (own, through):
        assert proc.exit_reason is ExitReason.ERROR, proc
        assert isinstance(proc.error, asyncio.CancelledError)
    assert own.error.args == ("my own reasons",)  # type: ignore[union-attr]
    assert manager.counters["killed"] == 0 and manager.counters["failed"] == 2
    assert [r.exit_reason for r in manager.history] == [ExitReason.ERROR, ExitReason.ERROR]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for proc in (own, through):
        assert f"pid {proc.pid} ({proc.name}) failed: cancelled, not by kill() or stop()" in logged
    # kill() and stop() still say what they did.
    killed, stopped = manager.spawn(asyncio.Event().wait()), manager.spawn(asyncio.Event().wait())
    await asyncio.sleep(0)
    killed.kill()
    await stopped.stop()
    await killed.wait()
    assert killed.exit_reason is ExitReason.KILLED and killed.error is None
    assert stopped.exit_reason is ExitReason.SHUTDOWN and stopped.error is None


# -- kill, killall, shutdown ---------------------------------------------------------


async def test_killall_1000_connections_runs_every_hook_once() -> None:
    manager = ProcessManager()
    hook_runs: Counter[int] = Counter()

    class Hooked(Echo):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.at_exit(hook_runs.update, [self.pid])

    server, port = await serve(manager.register(Hooked))
    clients = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(1000))
    )
    await until(lambda: len(manager) == 1000 and len(hook_runs) == 0, timeout=20)
    await until(lambda: all(p.state is ProcessState.RUNNING for p in manager), timeout=20)
    assert manager.killall(kind="conn") == 1000
    # Every client sees its connection end.
    eofs = await asyncio.gather(*(reader.read() for reader, _ in clients))
    assert eofs == [b""] * 1000
    await until(lambda: len(manager) == 0)
    assert sorted(hook_runs) == list(range(1, 1001))
    assert set(hook_runs.values()) == {1}
    assert manager.counters["killed"] == 1000
    for _, writer in clients:
        writer.close()
    server.close()
    await server.wait_closed()
    await manager.shutdown()
    assert set(hook_runs.values()) == {1}


async def test_shutdown_is_graceful_then_kills_and_is_idempotent() -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(Echo))

    class Stubborn(TaskProcess):
        async def main(self) -> None:
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    if self.exit_reason is None and self._archangel_reason is ExitReason.KILLED:
                        raise
                    # ignores the graceful stop

    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await until(lambda: len(manager) == 3)
    stubborn = manager.spawn(Stubborn())
    hooks: list[int] = []
    for proc in manager:
        proc.at_exit(hooks.append, proc.pid)
    server.close()
    await asyncio.sleep(0)

    first = asyncio.ensure_future(manager.shutdown(timeout=0.2))
    second = asyncio.ensure_future(manager.shutdown(timeout=0.2))
    assert await asyncio.gather(first, second) == [False, False]  # forced: one was killed
    assert len(manager) == 0
    assert sorted(hooks) == [1, 2, 3, 4]
    reasons = {r.pid: r.exit_reason for r in manager.history}
    assert reasons == {
        1: ExitReason.SHUTDOWN,
        2: ExitReason.SHUTDOWN,
        3: ExitReason.SHUTDOWN,
        4: ExitReason.KILLED,
    }
    assert stubborn.state is ProcessState.EXITED
    for reader, writer in clients:
        assert await reader.read() == b""
        writer.close()
    assert await manager.shutdown() is False  # a third call after the end returns at once


async def test_shutdown_says_true_when_everything_ended_in_time() -> None:
    manager = ProcessManager()
    proc = manager.register(Idle())
    released = asyncio.Event()

    async def release() -> None:
        await asyncio.sleep(0)
        released.set()

    proc.at_exit(release)
    assert await manager.shutdown(timeout=10) is True
    assert released.is_set() and proc.exit_reason is ExitReason.SHUTDOWN
    assert await manager.shutdown(timeout=10) is True  # the same answer, twice


async def test_shutdown_bounds_an_async_hook_that_never_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Today one such hook makes ``shutdown(timeout)``, and so the service, never end."""
    manager = ProcessManager()
    waiting_at: list[str] = []

    class Holder(Idle):
        def on_stop(self) -> None:  # a graceful end whose hook then hangs
            self.at_exit(self.flush)
            super().on_stop()

        async def flush(self) -> None:
            frame = sys._getframe()
            waiting_at.append(f"{frame.f_code.co_filename}:{frame.f_lineno + 1}")
            await asyncio.Event().wait()  # a peer that never answers

    holders = [manager.register(Holder()) for _ in range(2)]
    quick = manager.register(Idle())
    quick.at_exit(asyncio.sleep, 0)  # an async hook that finishes: not cancelled
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.manager"):
        async with asyncio.timeout(15):  # generous: the bound is 0.2 s + KILL_GRACE
            assert await manager.shutdown(timeout=0.2) is False
    assert [h.exit_reason for h in holders] == [ExitReason.SHUTDOWN] * 2
    cancelled = [r.getMessage() for r in caplog.records if "cancelling it" in r.getMessage()]
    assert len(cancelled) == 2, cancelled
    for holder, message in zip(holders, sorted(cancelled), strict=True):
        assert f"of pid {holder.pid} " in message
        assert f"awaiting at {waiting_at[0]}" in message  # the hook's own line, not asyncio's
    assert not manager._hook_tasks
    async with asyncio.timeout(1):
        assert await manager.shutdown() is False  # the same answer, at once


async def test_a_forced_shutdown_lets_killed_processes_hooks_finish_and_gives_up_on_a_deaf_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ProcessManager()
    finished: list[str] = []
    release = asyncio.Event()

    class Stubborn(Idle):
        def on_stop(self) -> None:
            pass  # ignores the graceful stop; its kill ends it

    stubborn = manager.register(Stubborn())

    async def flush() -> None:  # started by the kill, past the deadline
        await asyncio.sleep(0.01)
        finished.append("flush")

    stubborn.at_exit(flush)

    async def deaf() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # ignores its cancellation

    manager.register(Idle()).at_exit(deaf)
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.manager"):
        async with asyncio.timeout(15):
            assert await manager.shutdown(timeout=0.1) is False
    assert finished == ["flush"] and stubborn.exit_reason is ExitReason.KILLED
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cancelling it" in m for m in messages) == 1, messages  # only the deaf hook
    assert sum("ignored its cancellation" in m for m in messages) == 1, messages
    release.set()
    await asyncio.gather(*manager._hook_tasks)


async def test_shutdown_drops_a_process_that_ignores_its_kill(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Deaf(Process):
        def on_stop(self) -> None:
            pass

        def on_kill(self, reason: ExitReason) -> None:
            pass

    manager = ProcessManager()
    deaf = manager.register(Deaf())
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.manager"):
        async with asyncio.timeout(15):
            assert await manager.shutdown(timeout=0.05) is False
    assert len(manager) == 0 and deaf.exit_reason is ExitReason.KILLED
    assert any("did not exit when killed" in r.getMessage() for r in caplog.records)


async def test_shutdown_while_processes_exit_on_their_own() -> None:
    """Processes that end by themselves while the shutdown runs: each hook once, counts add up."""
    manager = ProcessManager()
    hooks: Counter[int] = Counter()

    class Finisher(TaskProcess):
        """Asked to stop, it finishes its work and returns (it is not cancelled)."""

        def __init__(self, n: int) -> None:
            self.n = n
            self.stopping = asyncio.Event()

        def on_stop(self) -> None:
            self.stopping.set()

        async def main(self) -> int:
            await self.stopping.wait()
            for _ in range(self.n % 5):
                await asyncio.sleep(0)
            return self.n

    class Polite(Process, asyncio.Protocol):
        """Asked to stop, it says bye and waits for the client to close."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.at_exit(hooks.update, [self.pid])

        def on_stop(self) -> None:
            self.transport.write(b"bye\n")

    async def client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = await reader.readline()
        writer.close()  # during the graceful period: the server side ends on its own
        await writer.wait_closed()
        return line

    async def short(n: int) -> int:
        for _ in range(n % 3):
            await asyncio.sleep(0)
        return n

    server, port = await serve(manager.register(Polite))
    clients = [asyncio.ensure_future(client(port)) for _ in range(50)]
    await until(lambda: len(manager) == 50)
    await until(lambda: all(p.state is ProcessState.RUNNING for p in manager))
    finishers = [manager.spawn(Finisher(n)) for n in range(50)]
    shorts = [manager.spawn(short(n)) for n in range(50)]  # some end before they are stopped
    for proc in [*finishers, *shorts]:
        proc.at_exit(hooks.update, [proc.pid])

    await manager.shutdown(timeout=10)
    assert len(manager) == 0
    assert sorted(hooks) == list(range(1, 151))
    assert set(hooks.values()) == {1}
    assert [f.result for f in finishers] == list(range(50))  # returned, not cancelled
    assert {f.exit_reason for f in finishers} == {ExitReason.SHUTDOWN}
    assert await asyncio.gather(*clients) == [b"bye\n"] * 50
    counters = manager.counters
    assert (counters["started"], counters["exited"], counters["running"]) == (150, 150, 0)
    assert counters["killed"] == counters["failed"] == 0  # nobody had to be killed
    assert sum(k["exited"] for k in counters["kinds"].values()) == 150
    server.close()
    await server.wait_closed()


# -- counters and repr -------------------------------------------------------------


def test_counters_and_repr() -> None:
    manager = ProcessManager(name="web")
    procs = [manager.register(Idle()) for _ in range(4)]
    procs[0].kill()
    procs[1].stop()
    procs[2].connection_lost(OSError("reset"))
    counters = manager.counters
    assert {k: counters[k] for k in ("started", "exited", "killed", "failed", "running")} == {
        "started": 4,
        "exited": 3,
        "killed": 1,
        "failed": 1,
        "running": 1,
    }
    assert repr(manager) == "<ProcessManager 'web' running=1 [open]>"


async def test_kill_and_shutdown_refuse_arguments_of_the_wrong_kind() -> None:
    manager = ProcessManager(name="m")
    task = manager.spawn(asyncio.sleep(3600), name="sleeper")
    for pid in ("1", 1.0, True):
        with pytest.raises(
            InvalidArgument, match=r"^<ProcessManager 'm' .*: kill\(\) takes an int pid"
        ):
            manager.kill(pid)  # type: ignore[arg-type]
    assert task.state is not task.state.EXITED  # nothing killed by a mistake
    assert manager.kill(99) is False  # an unknown pid is still no error
    for timeout in ("5", -1, float("nan")):
        with pytest.raises(InvalidArgument, match=r"shutdown\(\) timeout must be"):
            await manager.shutdown(timeout)  # type: ignore[arg-type]
    assert await manager.shutdown(1.0) is True
