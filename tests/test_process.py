"""The Process mixin: defaults, states, exit reasons, at-exit hooks, kill and stop."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging

import pytest

from archangel import ExitReason, InvalidArgument, Process, ProcessManager, ProcessState
from tests.helpers import serve, until


class Echo(Process, asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class NoSuper(Process, asyncio.Protocol):
    """Overrides both hooks and never calls super()."""

    def __init__(self, log: list[str]) -> None:  # no super().__init__() either
        self.log = log

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.log.append(f"made {self.state.value}")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.log.append(f"lost {self.state.value}")


class WithSuper(Process, asyncio.Protocol):
    """Calls super() first in both hooks, then does its own work."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.log.append("made")

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.log.append(f"lost, still {self.state.value}")


class ProtocolFirst(asyncio.Protocol, Process):
    """Bases in the other order: asyncio's no-op hooks come first in the MRO."""


def test_defaults_are_set_in_new_without_init_chain() -> None:
    proc = NoSuper([])
    assert proc.pid is None
    assert proc.manager is None
    assert proc.state is ProcessState.NEW
    assert proc.exit_reason is None
    assert proc.error is None
    assert proc.transport is None
    assert proc.name == "NoSuper"
    assert proc.kind == "conn"
    proc.name = "custom"
    assert proc.name == "custom"
    assert "custom pid=None conn [new]" in repr(proc)


async def test_bookkeeping_without_super_calls() -> None:
    manager = ProcessManager()
    log: list[str] = []
    server, port = await serve(manager.register(lambda: NoSuper(log)))
    hooks: list[int] = []
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await until(lambda: len(manager) == 1 and manager[1].state is ProcessState.RUNNING)
    proc = manager[1]
    assert proc.transport is not None  # recorded although the override ignores it
    proc.at_exit(hooks.append, proc.pid)
    writer.close()
    await proc.wait()
    assert log == ["made running", "lost running"]  # user code runs before the exit
    assert proc.state is ProcessState.EXITED
    assert proc.exit_reason is ExitReason.NORMAL
    assert hooks == [1]
    assert len(manager) == 0
    server.close()
    await server.wait_closed()


async def test_hooks_run_after_an_override_that_calls_super_first() -> None:
    manager = ProcessManager()
    log: list[str] = []
    server, port = await serve(manager.register(lambda: WithSuper(log)))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await until(lambda: 1 in manager)
    proc = manager[1]
    proc.at_exit(lambda: log.append("hook"))
    writer.close()
    await proc.wait()
    # The exit (and its hooks) waits for the whole override, not the super() call.
    assert log == ["made", "lost, still running", "hook"]
    server.close()
    await server.wait_closed()


async def test_bookkeeping_with_protocol_before_process_in_bases() -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(ProtocolFirst))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await until(lambda: 1 in manager and manager[1].state is ProcessState.RUNNING)
    proc = manager[1]
    writer.close()
    await proc.wait()
    assert proc.exit_reason is ExitReason.NORMAL
    server.close()
    await server.wait_closed()


async def test_at_exit_order_decorator_and_exactly_once() -> None:
    proc = ProcessManager().register(Echo())
    calls: list[str] = []

    @proc.at_exit
    def first() -> None:
        calls.append("first")

    proc.at_exit(calls.append, "second")
    proc.at_exit(lambda tag="third": calls.append(tag))
    proc.kill()  # no transport: exits at once
    proc.connection_lost(None)  # a second end must not rerun anything
    proc.kill()
    assert calls == ["third", "second", "first"]
    assert proc.exit_reason is ExitReason.KILLED


async def test_at_exit_after_exit_runs_immediately() -> None:
    proc = Echo()
    proc.kill()
    calls: list[int] = []
    proc.at_exit(calls.append, 1)
    assert calls == [1]


async def test_raising_hook_is_logged_with_pid_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = ProcessManager().register(Echo())
    calls: list[str] = []
    proc.at_exit(calls.append, "a")

    @proc.at_exit
    def broken() -> None:
        raise RuntimeError("hook failed")

    proc.at_exit(calls.append, "c")
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.process"):
        proc.kill()
    assert calls == ["c", "a"]
    [record] = caplog.records
    assert "pid 1" in record.getMessage()
    assert record.exc_info is not None and "hook failed" in str(record.exc_info[1])


@pytest.mark.parametrize(
    "error", [asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit]
)
async def test_a_hook_raising_a_base_exception_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture, error: type[BaseException]
) -> None:
    """Every hook runs and is logged; an interrupt is raised again once all have run."""
    proc = ProcessManager().register(Echo())
    calls: list[str] = []
    proc.at_exit(calls.append, "a")

    @proc.at_exit
    def broken() -> None:
        raise error("from the hook")

    proc.at_exit(calls.append, "c")
    waiter = asyncio.ensure_future(proc.wait())
    await asyncio.sleep(0)
    interrupt = error in (KeyboardInterrupt, SystemExit)
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.process"):
        if interrupt:
            with pytest.raises(error, match="from the hook"):
                proc.kill()
        else:
            proc.kill()  # logged and dropped
    assert calls == ["c", "a"]
    assert proc.state is ProcessState.EXITED and proc.exit_reason is ExitReason.KILLED
    [record] = [r for r in caplog.records if r.name == "archangel.kernel.process"]
    assert "at-exit hook" in record.getMessage() and "pid 1" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], error)
    async with asyncio.timeout(5):
        await waiter  # waiters are woken before the interrupt is raised again
    if interrupt:
        with pytest.raises(error):
            proc.at_exit(broken)  # on an exited process: runs at once, raises again


async def test_the_first_of_two_interrupts_is_raised_again() -> None:
    proc = ProcessManager().register(Echo())

    def exit_hook() -> None:
        raise SystemExit(3)

    def interrupt_hook() -> None:
        raise KeyboardInterrupt

    proc.at_exit(exit_hook)
    proc.at_exit(interrupt_hook)  # runs first: last registered, first run
    with pytest.raises(KeyboardInterrupt):
        proc.kill()


async def test_async_hook_is_awaited_and_shutdown_waits_for_it() -> None:
    manager = ProcessManager()
    proc = manager.register(Echo())
    finished = asyncio.Event()

    async def slow_hook() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    proc.at_exit(slow_hook)
    proc.kill()
    assert not finished.is_set()
    await manager.shutdown(timeout=1)
    assert finished.is_set()


async def test_failing_async_hook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    manager = ProcessManager()
    proc = manager.register(Echo())

    async def broken() -> None:
        raise ValueError("async hook failed")

    proc.at_exit(broken)
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.manager"):
        proc.kill()
        await manager.shutdown(timeout=1)
    assert any("pid 1" in r.getMessage() for r in caplog.records)


async def test_failing_async_hook_without_a_manager_is_logged_with_the_pid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = Echo()  # no manager, so no PID: the log says so

    async def broken() -> None:
        raise ValueError("unmanaged hook failed")

    proc.at_exit(broken)

    def ours() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "archangel.kernel.process"]

    with caplog.at_level(logging.ERROR, logger="archangel.kernel.process"):
        proc.kill()
        await until(lambda: bool(ours()))
    [record] = ours()
    assert "pid None" in record.getMessage()
    assert record.exc_info is not None and "unmanaged hook failed" in str(record.exc_info[1])


@pytest.mark.parametrize("managed", [False, True], ids=["unmanaged", "managed"])
def test_async_hook_with_no_running_loop_is_logged_and_closed(
    caplog: pytest.LogCaptureFixture, managed: bool
) -> None:
    proc = ProcessManager().register(Echo()) if managed else Echo()
    calls: list[str] = []
    proc.at_exit(calls.append, "sync")

    async def release() -> None:
        calls.append("async")

    proc.at_exit(release)
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.process"):
        proc.kill()
    gc.collect()  # a coroutine left unclosed would warn "never awaited" here
    assert calls == ["sync"]
    [record] = [r for r in caplog.records if r.name == "archangel.kernel.process"]
    assert "no event loop is running" in record.getMessage()
    assert f"pid {proc.pid}" in record.getMessage()


async def test_exit_reasons_over_real_connections() -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(Echo))

    async def connect() -> tuple[Process, asyncio.StreamWriter]:
        before = manager.counters["started"]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: manager.counters["started"] == before + 1)
        return manager[before + 1], writer

    normal, w1 = await connect()
    w1.close()
    await normal.wait()
    assert normal.exit_reason is ExitReason.NORMAL

    killed, w2 = await connect()
    killed.kill()
    await killed.wait()
    assert killed.exit_reason is ExitReason.KILLED

    stopped, w3 = await connect()
    await stopped.stop()  # awaiting stop() waits for the exit
    assert stopped.exit_reason is ExitReason.SHUTDOWN

    errored, w4 = await connect()
    boom = OSError(errno.EIO, "I/O error")
    errored.connection_lost(boom)  # as a transport reports a failure of its own
    assert errored.exit_reason is ExitReason.ERROR
    assert errored.error is boom
    errored.transport.abort()

    for writer in (w1, w2, w3, w4):
        writer.close()
    server.close()
    await server.wait_closed()


async def test_on_kill_override_and_reason() -> None:
    seen: list[ExitReason] = []

    class Graceful(Process, asyncio.Protocol):
        def on_kill(self, reason: ExitReason) -> None:
            seen.append(reason)
            super().on_kill(reason)

    proc = ProcessManager().register(Graceful())
    proc.kill("shutdown")
    assert seen == [ExitReason.SHUTDOWN]
    assert proc.exit_reason is ExitReason.SHUTDOWN
    victim = Graceful()
    with pytest.raises(InvalidArgument, match=r"cannot kill <Graceful pid=None conn \[new\]>"):
        victim.kill("bogus")
    assert victim.state is ProcessState.NEW


async def test_killed_before_connection_made_aborts_the_transport() -> None:
    manager = ProcessManager()
    made: list[Process] = []

    def factory() -> Echo:
        proc = Echo()
        made.append(proc)
        proc.kill()  # dies between the factory and connection_made
        return proc

    server, port = await serve(manager.register(factory))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.read() == b""  # the server side was aborted
    assert made[0].exit_reason is ExitReason.KILLED
    writer.close()
    server.close()
    await server.wait_closed()


def test_process_info_as_dict_is_json_ready() -> None:
    import json

    proc = ProcessManager().register(Echo())
    proc.kill()
    record = proc.info().as_dict()
    assert json.loads(json.dumps(record))["exit_reason"] == "killed"
    assert record["pid"] == 1
    assert record["state"] == "exited"


def test_class_creation_runs_no_user_code_and_slots_subclasses_work() -> None:
    finalized: list[str] = []

    class Finalized(Process, asyncio.Protocol):
        def __init__(self) -> None:
            finalized.append("init")

        def __del__(self) -> None:
            finalized.append("del")

    assert finalized == []  # no throwaway instance for a class with a finalizer

    class Slotted(Process, asyncio.Protocol):
        __slots__ = ("extra",)

    proc = ProcessManager().register(Slotted())
    proc.extra = 1
    assert proc.pid == 1
    assert proc.state is ProcessState.NEW
    proc.kill()
    assert proc.exit_reason is ExitReason.KILLED


async def test_normal_exits_record_the_same_with_and_without_hooks() -> None:
    """The common end (no hooks) takes a shorter path; its record must not differ."""
    manager = ProcessManager()
    server, port = await serve(manager.register(Echo))
    for with_hook in (False, True):
        pid = manager.counters["started"] + 1
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda pid=pid: pid in manager)
        if with_hook:
            manager[pid].at_exit(lambda: None)
        writer.close()
        await until(lambda pid=pid: pid not in manager)
    plain, hooked = manager.history
    for record in (plain, hooked):
        assert record.state is ProcessState.EXITED
        assert record.exit_reason is ExitReason.NORMAL
        assert record.error is None
        assert record.ended is not None
        assert record.started is not None
        assert record.ended >= record.started
    assert plain.details == hooked.details == {}
    assert manager.counters["exited"] == 2
    server.close()
    await server.wait_closed()
