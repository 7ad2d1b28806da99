"""Supervisor: restart types, strategies, the restart limit, backoff, stop order."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from archangel import (
    IGNORE,
    ChildNotFound,
    ChildSpec,
    DuplicateChild,
    ExitReason,
    InvalidArgument,
    Pipeline,
    Process,
    ProcessManager,
    ProcessState,
    ProcessStateError,
    RestartLimitExceeded,
    Supervisor,
    TaskProcess,
)
from tests.conftest import VirtualClockLoop
from tests.helpers import until


class Journal:
    """What the children did, in order: ("start", name) and ("stop", name)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.crash: dict[str, asyncio.Future[None]] = {}

    def child(self, name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        """A factory of a child that runs until told to crash (or return)."""

        async def run() -> None:
            self.events.append(("start", name))
            self.crash[name] = asyncio.get_running_loop().create_future()
            try:
                await self.crash[name]
            finally:
                self.events.append(("stop", name))

        run.__qualname__ = name
        return run

    def fail(self, name: str, exc: BaseException | None = None) -> None:
        future = self.crash[name]
        if exc is None:
            future.set_result(None)  # the child returns normally
        else:
            future.set_exception(exc)

    def starts(self, name: str) -> int:
        return self.events.count(("start", name))


def pids(supervisor: Supervisor) -> list[int | None]:
    return [c.pid for c in supervisor.children]


async def started(
    manager: ProcessManager,
    supervisor: Supervisor,
    n: int,
    journal: Journal | None = None,
    starts: int | None = None,
) -> Supervisor:
    """Spawn ``supervisor``; return once it has ``n`` children and (with a
    journal) ``starts`` of them, ``n`` by default, have begun to run."""
    manager.spawn(supervisor)
    await until(lambda: len(supervisor.children) == n)
    if journal is not None:
        want = n if starts is None else starts
        await until(lambda: sum(e[0] == "start" for e in journal.events) >= want)
    return supervisor


async def test_one_for_one_restarts_only_the_child_that_failed() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(journal.child("a"), journal.child("b"), journal.child("c")),
        3,
        journal=journal,
    )
    assert journal.events == [("start", "a"), ("start", "b"), ("start", "c")]
    a, b, c = sup.children
    assert {a.parent, b.parent, c.parent} == {sup}
    assert [a.name, b.name, c.name] == ["a", "b", "c"]

    journal.fail("b", RuntimeError("boom"))
    await until(lambda: journal.starts("b") == 2)
    await until(lambda: len(sup.children) == 3)
    a2, b2, c2 = sup.children
    assert a2 is a and c2 is c
    assert b.exit_reason is ExitReason.ERROR and b2.pid is not None and b2.pid > c.pid  # type: ignore[operator]
    assert sup.restarts == 1
    assert sup.info().details == {"strategy": "one_for_one", "children": 3, "restarts": 1}
    await manager.shutdown(5)


async def test_one_for_all_stops_the_others_last_first_then_starts_all_in_order() -> None:
    journal, manager = Journal(), ProcessManager()
    names = ["a", "b", "c", "d"]
    sup = await started(
        manager,
        Supervisor(*(journal.child(n) for n in names), strategy="one_for_all"),
        4,
        journal=journal,
    )
    journal.events.clear()
    journal.fail("b", RuntimeError("boom"))
    await until(lambda: journal.starts("d") == 1)
    assert journal.events == [
        ("stop", "b"),
        ("stop", "d"),
        ("stop", "c"),
        ("stop", "a"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    await until(lambda: len(sup.children) == 4)
    await manager.shutdown(5)


async def test_rest_for_one_restarts_the_child_and_those_started_after_it() -> None:
    journal, manager = Journal(), ProcessManager()
    names = ["a", "b", "c", "d"]
    sup = await started(
        manager,
        Supervisor(*(journal.child(n) for n in names), strategy="rest_for_one"),
        4,
        journal=journal,
    )
    first_a = sup.children[0]
    journal.events.clear()
    journal.fail("b", RuntimeError("boom"))
    await until(lambda: journal.starts("d") == 1)
    assert journal.events == [
        ("stop", "b"),
        ("stop", "d"),
        ("stop", "c"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    await until(lambda: len(sup.children) == 4)
    assert sup.children[0] is first_a
    await manager.shutdown(5)


async def test_restart_types() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(
            ChildSpec(journal.child("perm")),
            ChildSpec(journal.child("trans"), restart="transient"),
            ChildSpec(journal.child("temp"), restart="temporary"),
        ),
        3,
        journal=journal,
    )
    journal.fail("perm")  # permanent: restarted even after a normal return
    await until(lambda: journal.starts("perm") == 2)

    journal.fail("trans")  # transient, normal return: not restarted
    await until(lambda: len(sup.children) == 2)
    journal.fail("temp", RuntimeError("boom"))  # temporary: never restarted
    await until(lambda: len(sup.children) == 1)
    await asyncio.sleep(0.05)
    assert journal.starts("trans") == 1 and journal.starts("temp") == 1
    assert [c.name for c in sup.children] == ["perm"]
    assert sup.restarts == 1
    await manager.shutdown(5)


async def test_a_transient_child_is_restarted_after_an_error_or_a_kill() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager, Supervisor(ChildSpec(journal.child("t"), restart="transient")), 1, journal=journal
    )
    journal.fail("t", OSError("lost the feed"))
    await until(lambda: journal.starts("t") == 2)
    await until(lambda: len(sup.children) == 1)
    assert manager.kill(sup.children[0].pid)  # type: ignore[arg-type]
    await until(lambda: journal.starts("t") == 3)
    assert sup.restarts == 2
    await manager.shutdown(5)


async def test_temporary_children_are_not_restarted_with_their_siblings() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(
            ChildSpec(journal.child("temp"), restart="temporary"),
            journal.child("perm"),
            strategy="one_for_all",
        ),
        2,
        journal=journal,
    )
    journal.fail("perm", RuntimeError("boom"))
    await until(lambda: journal.starts("perm") == 2)
    await asyncio.sleep(0.05)
    assert ("stop", "temp") in journal.events and journal.starts("temp") == 1
    assert [c.name for c in sup.children] == ["perm"]
    await manager.shutdown(5)


async def test_more_restarts_than_the_limit_escalates_and_stops_the_children() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(
            journal.child("flaky"), journal.child("steady"), max_restarts=2, max_seconds=60
        ),
        2,
        journal=journal,
    )
    for attempt in range(1, 4):
        await until(lambda n=attempt: journal.starts("flaky") == n)
        await until(lambda: len(sup.children) == 2)
        journal.fail("flaky", RuntimeError(f"failure {attempt}"))
    await sup.wait()
    assert sup.exit_reason is ExitReason.ERROR
    assert isinstance(sup.error, RestartLimitExceeded)
    message = str(sup.error)
    assert "more than 2 restarts in 60 s" in message and "Supervisor" in message
    assert "flaky" in message and "error" in message
    assert journal.starts("flaky") == 3 and sup.restarts == 2
    assert ("stop", "steady") in journal.events  # stopped, not left behind
    assert len(manager) == 0
    assert manager.counters["kinds"]["supervisor"]["failed"] == 1


async def test_the_limit_is_a_sliding_window() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(journal.child("x"), max_restarts=1, max_seconds=0.2),
        1,
        journal=journal,
    )
    for attempt in range(1, 5):  # one failure per window: never more than 1 in 0.2 s
        await until(lambda n=attempt: journal.starts("x") == n)
        await asyncio.sleep(0.25)
        journal.fail("x", RuntimeError("slow failure"))
    await until(lambda: journal.starts("x") == 5)
    assert sup.state is ProcessState.RUNNING and sup.restarts == 4
    await until(lambda: len(sup.children) == 1)
    await asyncio.sleep(0.25)
    journal.fail("x", RuntimeError("fast failure 1"))  # then two within 0.2 s: over the limit
    await until(lambda: journal.starts("x") == 6)
    await until(lambda: len(sup.children) == 1)
    journal.fail("x", RuntimeError("fast failure 2"))
    await sup.wait()
    assert isinstance(sup.error, RestartLimitExceeded)


async def test_backoff_doubles_with_jitter_up_to_the_maximum(clock: VirtualClockLoop) -> None:
    journal, manager = Journal(), ProcessManager()
    starts: list[float] = []
    inner = journal.child("b")

    def factory() -> Coroutine[Any, Any, None]:
        starts.append(clock.time())
        return inner()

    sup = Supervisor(factory, max_restarts=10, max_seconds=60, backoff=0.04, max_backoff=0.1)
    manager.spawn(sup)
    await clock.settle()
    assert journal.starts("b") == 1
    failed: list[float] = []
    for attempt in range(1, 5):
        failed.append(clock.time())
        journal.fail("b", RuntimeError("boom"))
        await clock.settle()
        assert journal.starts("b") == attempt  # not restarted before its delay
        await clock.advance(0.1)  # the largest delay
        assert journal.starts("b") == attempt + 1
        assert len(sup.children) == 1
    gaps = [start - fail for fail, start in zip(failed, starts[1:], strict=True)]
    # Delays 0.04, 0.08, then capped at 0.1: each between half of it and all of it.
    for gap, delay in zip(gaps, [0.04, 0.08, 0.1, 0.1], strict=True):
        assert delay / 2 - 1e-9 <= gap <= delay + 1e-9, (gaps, delay)
    shutdown = asyncio.create_task(manager.shutdown(5))
    await clock.advance(5)
    assert shutdown.done()
    await shutdown


async def test_stop_stops_children_last_first_and_kills_one_past_its_shutdown_time() -> None:
    journal, manager = Journal(), ProcessManager()
    stopped: list[str] = []

    class Stubborn(TaskProcess):
        """Ignores stop(); only kill() ends it."""

        async def main(self) -> None:
            await asyncio.Event().wait()

        def on_stop(self) -> None:
            stopped.append("asked")

    sup = await started(
        manager,
        Supervisor(
            journal.child("a"),
            ChildSpec(lambda: Stubborn(name="stubborn"), shutdown=0.05),
            journal.child("c"),
        ),
        3,
        journal=journal,
        starts=2,
    )
    stubborn = sup.children[1]
    await sup.stop()
    assert sup.exit_reason is ExitReason.SHUTDOWN
    assert [e for e in journal.events if e[0] == "stop"] == [("stop", "c"), ("stop", "a")]
    assert stopped == ["asked"] and stubborn.exit_reason is ExitReason.KILLED
    assert sup.restarts == 0 and len(manager) == 0


async def test_a_child_whose_on_stop_raises_is_killed_and_the_rest_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Today the supervisor gives up at that child and the ones started before run on."""
    journal, manager = Journal(), ProcessManager()

    class Broken(TaskProcess):
        async def main(self) -> None:
            await asyncio.Event().wait()

        def on_stop(self) -> None:
            raise RuntimeError("cannot stop cleanly")

    sup = await started(
        manager,
        Supervisor(
            journal.child("a"), ChildSpec(lambda: Broken(name="broken")), journal.child("c")
        ),
        3,
        journal=journal,
        starts=2,
    )
    first, broken, _ = sup.children
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.supervisor"):
        async with asyncio.timeout(10):
            await sup.stop()
    assert [e for e in journal.events if e[0] == "stop"] == [("stop", "c"), ("stop", "a")]
    assert broken.exit_reason is ExitReason.KILLED
    assert first.exit_reason is ExitReason.SHUTDOWN
    assert sup.exit_reason is ExitReason.SHUTDOWN and len(manager) == 0
    [record] = [r for r in caplog.records if "raised; killing it" in r.getMessage()]
    assert f"pid {broken.pid} (broken)" in record.getMessage()
    assert record.exc_info is not None and "cannot stop cleanly" in str(record.exc_info[1])


async def test_killing_the_supervisor_kills_its_children() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager, Supervisor(journal.child("a"), journal.child("b")), 2, journal=journal
    )
    children = sup.children
    sup.kill()
    await sup.wait()
    assert sup.exit_reason is ExitReason.KILLED
    assert [c.exit_reason for c in children] == [ExitReason.KILLED, ExitReason.KILLED]
    assert len(manager) == 0 and sup.restarts == 0


async def test_manager_shutdown_leaves_children_to_their_supervisor() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(journal.child("a"), journal.child("b"), journal.child("c")),
        3,
        journal=journal,
    )
    await manager.shutdown(5)
    assert [e for e in journal.events if e[0] == "stop"] == [
        ("stop", "c"),
        ("stop", "b"),
        ("stop", "a"),
    ]
    assert sup.exit_reason is ExitReason.SHUTDOWN and sup.restarts == 0
    assert len(manager) == 0


async def test_a_nested_supervisor_that_gives_up_is_restarted_by_its_parent() -> None:
    journal, manager = Journal(), ProcessManager()
    inner_made: list[Supervisor] = []

    def inner() -> Supervisor:
        sup = Supervisor(journal.child("leaf"), max_restarts=0, name="inner")
        inner_made.append(sup)
        return sup

    outer = await started(manager, Supervisor(inner, name="outer"), 1, journal=journal)
    await until(lambda: journal.starts("leaf") == 1)
    journal.fail("leaf", RuntimeError("boom"))  # the inner gives up at once
    await until(lambda: journal.starts("leaf") == 2)
    assert isinstance(inner_made[0].error, RestartLimitExceeded)
    assert outer.restarts == 1 and inner_made[1].parent is outer
    await manager.shutdown(5)
    assert outer.exit_reason is ExitReason.SHUTDOWN


async def test_a_pipeline_child_is_restarted_after_a_kill() -> None:
    manager = ProcessManager()
    seen: list[int] = []

    async def forever() -> Any:
        n = 0
        while True:
            n += 1
            yield n
            await asyncio.sleep(0.01)

    sup = await started(
        manager, Supervisor(lambda: Pipeline(forever(), seen.append, name="ticks")), 1
    )
    first = sup.children[0]
    assert first.kind == "pipeline" and first.name == "ticks"
    first.kill()
    await until(lambda: len(sup.children) == 1 and sup.children[0] is not first)
    await until(lambda: len(seen) >= 2)
    await manager.shutdown(5)
    assert sup.restarts == 1


async def test_a_factory_that_fails_on_restart_counts_against_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal, manager = Journal(), ProcessManager()
    calls = 0
    inner = journal.child("x")

    def factory() -> Coroutine[Any, Any, None]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("config file missing")
        return inner()

    sup = await started(
        manager, Supervisor(factory, max_restarts=3, max_seconds=60), 1, journal=journal
    )
    with caplog.at_level(logging.ERROR, logger="archangel.kernel.supervisor"):
        journal.fail("x", RuntimeError("boom"))
        await sup.wait()
    assert isinstance(sup.error, RestartLimitExceeded)
    assert "could not be restarted" in str(sup.error)
    assert calls == 4  # the first start, then three failed restarts
    assert "config file missing" in caplog.text


async def test_a_factory_that_fails_at_start_fails_the_supervisor_and_stops_the_rest() -> None:
    journal, manager = Journal(), ProcessManager()

    def broken() -> Any:
        raise OSError("no such pipeline")

    sup = manager.spawn(Supervisor(journal.child("a"), broken, journal.child("c")))
    await sup.wait()
    assert sup.exit_reason is ExitReason.ERROR and isinstance(sup.error, OSError)
    # "a" was started (and cancelled before its first step); "c" never was.
    assert [(r.name, r.exit_reason) for r in manager.history] == [
        ("a", ExitReason.SHUTDOWN),
        ("Supervisor", ExitReason.ERROR),
    ]
    assert len(manager) == 0


def test_bad_arguments_are_clear_errors() -> None:
    async def child() -> None:
        pass

    with pytest.raises(InvalidArgument, match="strategy must be one of 'one_for_one'"):
        Supervisor(child, strategy="one_for_some")
    with pytest.raises(InvalidArgument, match="ChildSpec restart must be one of 'permanent'"):
        ChildSpec(child, restart="forever")
    with pytest.raises(InvalidArgument, match="is not callable"):
        ChildSpec(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="is not callable"):
        Supervisor(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="shutdown must be >= 0"):
        ChildSpec(child, shutdown=-1)
    with pytest.raises(InvalidArgument, match="max_seconds must be > 0"):
        Supervisor(child, max_seconds=0)
    with pytest.raises(InvalidArgument, match="max_restarts must be >= 0"):
        Supervisor(child, max_restarts=-1)
    with pytest.raises(InvalidArgument, match="backoff must be between 0 and max_backoff"):
        Supervisor(child, backoff=60, max_backoff=30)
    assert issubclass(RestartLimitExceeded, RuntimeError)


async def test_ps_lists_the_supervisor_and_its_children() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(manager, Supervisor(journal.child("a"), name="web"), 1, journal=journal)
    rows = {info.pid: info for info in manager.ps()}
    assert rows[sup.pid].kind == "supervisor" and rows[sup.pid].name == "web"  # type: ignore[index]
    child = sup.children[0]
    assert rows[child.pid].kind == "task" and rows[child.pid].name == "a"  # type: ignore[index]
    assert rows[child.pid].details["parent"] == sup.pid  # type: ignore[index]
    assert "parent" not in rows[sup.pid].details  # type: ignore[index]
    await manager.shutdown(5)


# -- children at run time (issue 12) --------------------------------------------------


async def test_start_child_adds_a_child_that_strategies_and_the_stop_order_treat_as_the_rest() -> (
    None
):
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(journal.child("a"), journal.child("b"), strategy="one_for_all"),
        2,
        journal=journal,
    )
    added = await sup.start_child(ChildSpec(journal.child("c"), name="c"))
    assert added is not None and added.parent is sup and added.name == "c"
    await until(lambda: journal.starts("c") == 1)
    assert [c.name for c in sup.children] == ["a", "b", "c"]
    assert [s.id for s in sup.specs] == ["a", "b", "c"]
    journal.events.clear()
    journal.fail("a", RuntimeError("boom"))  # one_for_all: the added child goes too
    await until(lambda: journal.starts("c") == 1)
    assert journal.events == [
        ("stop", "a"),
        ("stop", "c"),
        ("stop", "b"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
    ]
    assert sup.restarts == 1
    journal.events.clear()
    await until(lambda: len(sup.children) == 3)
    await sup.stop()
    assert journal.events == [("stop", "c"), ("stop", "b"), ("stop", "a")]


async def test_terminate_keeps_the_spec_restart_and_delete_follow_otp() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(journal.child("a"), journal.child("b"), name="web"),
        2,
        journal=journal,
    )
    b = sup.children[1]
    await sup.terminate_child("b")
    assert b.exit_reason is ExitReason.SHUTDOWN and ("stop", "b") in journal.events
    assert [c.name for c in sup.children] == ["a"] and [s.id for s in sup.specs] == ["a", "b"]
    await sup.terminate_child("b")  # not running: nothing to do
    # That request was served after b's exit: had b been restarted, it would be by now.
    assert journal.starts("b") == 1 and sup.restarts == 0 and len(sup.children) == 1

    with pytest.raises(
        DuplicateChild, match=r"<web pid=1 .*cannot start child 'b'.*\[terminated\]"
    ):
        await sup.start_child(journal.child("b"))
    b2 = await sup.restart_child("b")
    assert b2 is not None and b2.pid == b.pid + 1  # type: ignore[operator]
    await until(lambda: journal.starts("b") == 2)
    assert [c.name for c in sup.children] == ["a", "b"]

    with pytest.raises(ProcessStateError) as running:
        await sup.restart_child("b")
    assert f"<web pid={sup.pid}" in str(running.value)
    assert f"cannot restart its child 'b' [running as pid {b2.pid}]" in str(running.value)
    with pytest.raises(ProcessStateError, match=r"cannot delete its child 'b' \[running as pid"):
        await sup.delete_child(b2.pid)  # by PID: the same child
    with pytest.raises(DuplicateChild, match=r"child 'a' \[running as pid \d+\]"):
        await sup.start_child(journal.child("a"))
    with pytest.raises(
        ChildNotFound, match=r"<web pid=1 .* has no child 'zz' \(its children: 'a', 'b'\)"
    ):
        await sup.terminate_child("zz")

    await sup.terminate_child(b2)  # by process
    await sup.delete_child("b")
    assert [s.id for s in sup.specs] == ["a"]
    with pytest.raises(ChildNotFound):
        await sup.restart_child("b")
    assert sup.state is ProcessState.RUNNING and sup.restarts == 0
    await manager.shutdown(5)


async def test_a_terminated_child_stays_down_when_a_sibling_restarts_all() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = await started(
        manager,
        Supervisor(
            journal.child("a"),
            journal.child("b"),
            ChildSpec(journal.child("t"), restart="temporary"),
            strategy="one_for_all",
        ),
        3,
        journal=journal,
    )
    await sup.terminate_child("b")
    await sup.terminate_child("t")  # temporary: terminated means gone
    assert [s.id for s in sup.specs] == ["a", "b"]
    journal.fail("a", RuntimeError("boom"))
    await until(lambda: journal.starts("a") == 2)
    await sup.terminate_child("b")  # served after the restart: b would be running by now
    assert journal.starts("b") == 1 and [c.name for c in sup.children] == ["a"]
    await manager.shutdown(5)


async def test_start_child_on_a_just_spawned_supervisor_starts_after_its_own_children() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = manager.spawn(Supervisor(journal.child("a")))
    added = await sup.start_child(journal.child("late"))  # before main()'s first step
    assert added is not None
    await until(lambda: journal.starts("late") == 1)
    assert journal.events == [("start", "a"), ("start", "late")]
    await manager.shutdown(5)


async def test_run_time_calls_need_a_running_supervisor() -> None:
    journal, manager = Journal(), ProcessManager()
    sup = Supervisor(journal.child("a"), name="idle")
    with pytest.raises(ProcessStateError, match=r"<idle pid=None .* is not running \(not spawned"):
        await sup.start_child(journal.child("b"))
    manager.spawn(sup)
    await sup.stop()
    for call in (sup.start_child(journal.child("b")), sup.terminate_child("a")):
        with pytest.raises(ProcessStateError, match=r"\[exited shutdown\]> is not running"):
            await call
    with pytest.raises(InvalidArgument, match="takes one ChildSpec or factory here"):
        await sup.start_child(journal.child("b"), 1)


async def test_a_start_child_whose_factory_raises_adds_nothing_and_the_supervisor_goes_on() -> (
    None
):
    journal, manager = Journal(), ProcessManager()
    sup = await started(manager, Supervisor(journal.child("a")), 1, journal=journal)

    def broken() -> Any:
        raise OSError("no such feed")

    with pytest.raises(OSError, match="no such feed"):
        await sup.start_child(broken)
    assert [s.id for s in sup.specs] == ["a"] and sup.state is ProcessState.RUNNING
    assert await sup.start_child(journal.child("b")) is not None
    await manager.shutdown(5)


async def test_killing_the_supervisor_during_a_request_answers_its_caller() -> None:
    manager = ProcessManager()

    class Stubborn(TaskProcess):
        async def main(self) -> None:
            await asyncio.Event().wait()

        def on_stop(self) -> None:
            asked.append(self)  # and ignores it: terminate_child waits its shutdown time

    asked: list[TaskProcess] = []
    sup = await started(
        manager, Supervisor(ChildSpec(lambda: Stubborn(name="s"), name="s", shutdown=60)), 1
    )
    terminating = asyncio.ensure_future(sup.terminate_child("s"))
    await until(lambda: bool(asked))
    sup.kill()
    with pytest.raises(ProcessStateError, match="was killed during terminate_child"):
        await terminating
    await sup.wait()
    assert len(manager) == 0


# -- template supervisors (OTP's simple_one_for_one) ------------------------------------


class Workers:
    """A template factory: ``worker(n)`` runs until ``finish(n)``/``crash(n)``."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.stopped: list[int] = []
        self.ends: dict[int, asyncio.Future[None]] = {}

    def factory(self, n: int, *, ignore: bool = False) -> Any:
        if ignore:
            return IGNORE
        return self.run(n)

    async def run(self, n: int) -> None:
        self.started.append(n)
        self.ends[n] = asyncio.get_running_loop().create_future()
        try:
            await self.ends[n]
        finally:
            self.stopped.append(n)


async def test_a_template_supervisor_starts_children_with_their_own_arguments() -> None:
    workers, manager = Workers(), ProcessManager()
    sup = manager.spawn(
        Supervisor(template=ChildSpec(workers.factory, restart="transient"), name="pool")
    )
    assert sup.children == [] and sup.specs == ()
    procs = [await sup.start_child(n) for n in (1, 2, 3)]
    await until(lambda: workers.started == [1, 2, 3])
    assert [p.parent for p in procs if p is not None] == [sup, sup, sup]
    assert await sup.start_child(4, ignore=True) is None  # ignored: no child added
    assert len(sup.children) == 3

    workers.ends[2].set_exception(RuntimeError("boom"))  # restarted with its arguments
    await until(lambda: workers.started == [1, 2, 3, 2])
    assert sup.restarts == 1 and len(sup.children) == 3
    workers.ends[1].set_result(None)  # transient, normal exit: gone, not kept
    await until(lambda: len(sup.specs) == 2)

    third = procs[2]
    await sup.terminate_child(third)  # type: ignore[arg-type]
    assert third.exit_reason is ExitReason.SHUTDOWN  # type: ignore[union-attr]
    assert len(sup.specs) == 1  # a template child terminated is gone
    with pytest.raises(ProcessStateError, match="starts its children from a template"):
        await sup.restart_child(sup.children[0])
    with pytest.raises(ProcessStateError, match=r"delete_child\(\) does not apply"):
        await sup.delete_child(sup.children[0].pid)  # type: ignore[arg-type]
    with pytest.raises(ChildNotFound):
        await sup.terminate_child(third)  # type: ignore[arg-type]

    await sup.start_child(5)
    await until(lambda: workers.started[-1] == 5)
    workers.stopped.clear()
    await sup.stop()
    assert workers.stopped == [5, 2]  # last started first


async def test_the_restart_limit_counts_template_children_too() -> None:
    workers, manager = Workers(), ProcessManager()
    sup = manager.spawn(
        Supervisor(template=workers.factory, max_restarts=2, max_seconds=60, on_give_up="ignore")
    )
    await sup.start_child(7)
    await sup.start_child(8)
    for attempt in range(1, 4):
        await until(lambda n=attempt: workers.started.count(7) == n)
        workers.ends[7].set_exception(RuntimeError(f"failure {attempt}"))
    await sup.wait()
    assert isinstance(sup.error, RestartLimitExceeded)
    assert 8 in workers.stopped and len(manager) == 0


async def test_a_template_supervisor_applies_one_for_all_in_start_order() -> None:
    workers, manager = Workers(), ProcessManager()
    sup = manager.spawn(Supervisor(template=workers.factory, strategy="one_for_all"))
    for n in (1, 2, 3):
        await sup.start_child(n)
    await until(lambda: len(workers.ends) == 3)
    workers.stopped.clear()
    workers.ends[2].set_exception(RuntimeError("boom"))
    await until(lambda: len(workers.started) == 6)
    assert workers.stopped == [2, 3, 1] and workers.started[3:] == [1, 2, 3]
    await manager.shutdown(5)


async def test_run_time_calls_wait_for_a_restart_in_its_backoff(clock: VirtualClockLoop) -> None:
    """Requests are served in turn with the exits: never in the middle of a restart."""
    workers, manager = Workers(), ProcessManager()
    sup = manager.spawn(
        Supervisor(template=workers.factory, backoff=1.0, max_backoff=1.0, max_restarts=5)
    )
    first = await sup.start_child(1)
    await sup.start_child(2)
    await clock.settle()
    workers.ends[2].set_exception(RuntimeError("boom"))  # restart after 0.5 to 1 s
    await clock.settle()
    terminating = asyncio.ensure_future(sup.terminate_child(first))  # type: ignore[arg-type]
    await clock.advance(0.4)
    assert not terminating.done() and first.state is ProcessState.RUNNING  # type: ignore[union-attr]
    await clock.advance(0.6)
    assert terminating.done() and first.exit_reason is ExitReason.SHUTDOWN  # type: ignore[union-attr]
    assert workers.started == [1, 2, 2] and len(sup.children) == 1

    workers.ends[2].set_exception(RuntimeError("boom again"))
    await clock.settle()
    starting = asyncio.ensure_future(sup.start_child(3))
    await clock.settle()
    stopping = asyncio.ensure_future(sup.stop())  # during the backoff: the request is refused
    await clock.settle()
    with pytest.raises(ProcessStateError, match=r"\[running\]> is stopping: cannot start_child"):
        await starting
    await stopping
    assert workers.started == [1, 2, 2] and sup.exit_reason is ExitReason.SHUTDOWN
    assert len(manager) == 0


async def test_a_child_terminated_while_its_restart_failed_stays_down(
    clock: VirtualClockLoop,
) -> None:
    journal, manager = Journal(), ProcessManager()
    calls = 0
    inner = journal.child("x")

    def factory() -> Coroutine[Any, Any, None]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("config file missing")
        return inner()

    sup = manager.spawn(Supervisor(ChildSpec(factory, name="x"), backoff=1.0, max_backoff=1.0))
    await clock.settle()
    journal.fail("x", RuntimeError("boom"))
    await clock.settle()  # in the backoff now
    terminating = asyncio.ensure_future(sup.terminate_child("x"))
    await clock.advance(1.0)  # the restart fails; then the request is served
    await terminating
    await clock.advance(10.0)
    assert calls == 2 and sup.children == [] and sup.restarts == 1
    assert [spec.id for spec in sup.specs] == ["x"]
    assert await sup.restart_child("x") is not None  # the operator's call, when it suits
    await clock.settle()
    assert calls == 3 and journal.starts("x") == 2
    shutdown = asyncio.ensure_future(manager.shutdown(5))
    await clock.advance(5)
    await shutdown


# -- IGNORE -------------------------------------------------------------------------------


async def test_a_child_that_answers_ignore_is_not_started_and_keeps_its_spec() -> None:
    journal, manager = Journal(), ProcessManager()
    ready = False
    inner = journal.child("later")

    def later() -> Any:
        return inner() if ready else IGNORE

    sup = await started(manager, Supervisor(journal.child("a"), later), 1, journal=journal)
    assert [c.name for c in sup.children] == ["a"] and [s.id for s in sup.specs] == ["a", "later"]
    assert journal.starts("later") == 0 and sup.restarts == 0
    assert await sup.restart_child("later") is None  # still ignoring
    with pytest.raises(DuplicateChild, match=r"child 'later' \[ignored"):
        await sup.start_child(later)
    ready = True
    assert await sup.restart_child("later") is not None
    await until(lambda: journal.starts("later") == 1)
    assert repr(IGNORE) == "archangel.IGNORE"
    await manager.shutdown(5)


# -- giving up ----------------------------------------------------------------------------


async def test_a_top_level_supervisor_that_gives_up_tells_on_give_up() -> None:
    journal, manager = Journal(), ProcessManager()
    told: list[tuple[str, Process, BaseException]] = []
    manager.give_up_handler = lambda sup, exc: told.append(("manager", sup, exc))

    def callback(sup: Supervisor, exc: BaseException) -> None:
        told.append(("callback", sup, exc))

    inner: list[Supervisor] = []

    def nested() -> Supervisor:
        inner.append(Supervisor(journal.child("leaf"), max_restarts=0, name="inner"))
        return inner[-1]

    stop = manager.spawn(Supervisor(journal.child("s"), max_restarts=0, name="stop"))
    own = manager.spawn(
        Supervisor(journal.child("o"), max_restarts=0, name="own", on_give_up=callback)
    )
    quiet = manager.spawn(
        Supervisor(journal.child("q"), max_restarts=0, name="quiet", on_give_up="ignore")
    )
    outer = manager.spawn(Supervisor(nested, max_restarts=0, name="outer", on_give_up="ignore"))
    await until(lambda: all(journal.starts(n) == 1 for n in "soq"))
    await until(lambda: journal.starts("leaf") == 1)
    for name in ("s", "o", "q", "leaf"):
        journal.fail(name, RuntimeError(f"{name} broke"))
    for sup in (stop, own, quiet, outer):
        await sup.wait()
    assert [(who, sup.name) for who, sup, _ in told] == [("manager", "stop"), ("callback", "own")]
    assert all(isinstance(exc, RestartLimitExceeded) for _, _, exc in told)
    assert isinstance(inner[0].error, RestartLimitExceeded)  # told its parent, not the manager
    assert all(sup.exit_reason is ExitReason.ERROR for sup in (stop, own, quiet, outer))


def test_bad_run_time_arguments_are_clear_errors() -> None:
    async def child() -> None:
        pass

    async def other() -> None:
        pass

    with pytest.raises(InvalidArgument, match="two children have the id 'child'"):
        Supervisor(child, ChildSpec(other, name="child"))
    with pytest.raises(InvalidArgument, match="a template supervisor starts with no children"):
        Supervisor(child, template=other)
    with pytest.raises(InvalidArgument, match="on_give_up must be 'stop', 'ignore' or a callable"):
        Supervisor(child, on_give_up="panic")
    assert ChildSpec(child).id == "child" and ChildSpec(child, name="x").id == "x"
    assert issubclass(ChildNotFound, LookupError) and issubclass(DuplicateChild, ValueError)


APP_GIVES_UP = """
import asyncio, sys
from archangel import App, State, Supervisor

app = App("flaky-app", shutdown_timeout=5)

async def worker():
    await asyncio.sleep(0.01)
    raise ConnectionError("the database went away")

@app.bus.on(State.START)
def start():
    app.manager.spawn(Supervisor(worker, max_restarts=2, max_seconds=60, name="db-pool"))

sys.exit(app.run(loop=sys.argv[1]))
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_app_whose_top_level_supervisor_gives_up_stops_with_status_1(
    loop: str, tmp_path: Path
) -> None:
    script = tmp_path / "flaky_app.py"
    script.write_text(APP_GIVES_UP)
    done = subprocess.run(
        [sys.executable, str(script), loop],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "flaky-app: supervisor 'db-pool' (pid 1) gave up: RestartLimitExceeded" in done.stderr
    assert "more than 2 restarts in 60 s" in done.stderr
    assert "ConnectionError" in done.stderr and "exiting with status 1" in done.stderr


def test_misused_limits_and_a_list_of_children_are_clear_errors() -> None:
    from archangel import NotCallable

    async def child() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(
        InvalidArgument, match=r"max_seconds must be a number of seconds >= 0, got '5'"
    ):
        Supervisor(child, max_seconds="5")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"max_restarts must be an int >= 0, got 2.5"):
        Supervisor(child, max_restarts=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"backoff must be a number of seconds"):
        Supervisor(child, backoff="1")  # type: ignore[arg-type]
    with pytest.raises(
        NotCallable, match=r"give each child as its own argument, Supervisor\(\*children\)"
    ):
        Supervisor([child, child])  # type: ignore[arg-type]
