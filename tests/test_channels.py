"""Channels (bus/channels.py): publish/subscribe, emit/ask/pipe, latches, walks with a deadline.

Ports the applicable parts of magicbus's suites (publish orders, priorities,
listener errors) and rel's (emit/ask/when/transpire). The ``bus`` fixture is in
the conftest; a :class:`~archangel.bus.Bus` is the usual owner of channels.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import logging
import re
import threading
import types
from collections.abc import Generator
from typing import Any

import pytest

from archangel.bus import channels
from archangel.bus.bus import STOP, Bus
from archangel.bus.states import State
from archangel.errors import ArchangelError, ChannelFailures, InvalidArgument
from tests.test_bus import recorder

MSG = "Listener %d on channel %s: %s."


def listener(log: list[str], channel: object, index: int) -> Any:
    def listen(arg: object = None) -> None:
        log.append(MSG % (index, channel, arg))

    return listen


# -- publish and subscribe (magicbus's PublishSubscribeTests) -------------------------------


async def test_builtin_channels_run_by_priority(bus: Bus[State]) -> None:
    log: list[str] = []
    expected: list[str] = []
    for channel in State:
        for index, priority in enumerate([100, 50, 0, 51]):
            bus.subscribe(channel, listener(log, channel, index), priority)
    for channel in State:
        await bus.publish(channel)
        expected.extend(MSG % (i, channel, None) for i in (2, 1, 3, 0))
        await bus.publish(channel, arg=79347)
        expected.extend(MSG % (i, channel, 79347) for i in (2, 1, 3, 0))
    assert log == expected


async def test_custom_channels_default_priority_is_50(bus: Bus[State]) -> None:
    log: list[str] = []
    expected: list[str] = []
    channels = ("hugh", "louis", "dewey")
    for channel in channels:
        for index, priority in enumerate([None, 10, 60, 40]):
            callback = listener(log, channel, index)
            if priority is None:
                bus.subscribe(channel, callback)
            else:
                bus.subscribe(channel, callback, priority)
    for channel in channels:
        await bus.publish(channel, "ah so")
        expected.extend(MSG % (i, channel, "ah so") for i in (1, 3, 0, 2))
        await bus.publish(channel)
        expected.extend(MSG % (i, channel, None) for i in (1, 3, 0, 2))
    assert log == expected


async def test_listener_errors_are_gathered_after_all_ran(bus: Bus[State]) -> None:
    log: list[str] = []
    expected: list[str] = []
    for channel in State:
        bus.subscribe(channel, listener(log, channel, 1))
        bus.subscribe(channel, lambda: None, priority=20)  # breaks: takes no argument
    for channel in State:
        with pytest.raises(ChannelFailures) as caught:
            await bus.publish(channel, 123)
        expected.append(MSG % (1, channel, 123))
        assert caught.value.channel is channel
        assert [type(exc) for exc in caught.value.exceptions] == [TypeError]
        assert str(caught.value).startswith(f"1 of 2 subscribers of {channel!r} failed")
    assert log == expected


async def test_equal_priorities_run_in_subscription_order(bus: Bus[State]) -> None:
    log: list[int] = []
    for index in range(20):
        bus.subscribe("c", functools.partial(log.append, index), priority=index % 3)
    await bus.publish("c")
    assert log == sorted(range(20), key=lambda index: (index % 3, index))


async def test_results_come_back_in_run_order_sync_and_async(bus: Bus[State]) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0)
        return x * 10

    bus.subscribe("c", lambda x: x + 1, priority=60)
    bus.subscribe("c", slow, priority=40)
    bus.subscribe("c", lambda x: x, priority=50)
    assert await bus.publish("c", 2) == [20, 2, 3]


@pytest.mark.parametrize(
    ("args", "kwargs"), [((), {}), ((1,), {}), ((1, 2), {}), ((), {"k": 1}), ((1,), {"k": 1})]
)
@pytest.mark.parametrize("warm", [False, True], ids=["first publish", "later publish"])
async def test_every_subscriber_runs_despite_failures(
    bus: Bus[State], args: tuple[Any, ...], kwargs: dict[str, Any], warm: bool
) -> None:
    calls: list[str] = []
    armed = not warm  # a clean first publish, then one where two subscribers fail

    def ok(name: str) -> Any:
        return lambda *a, **kw: calls.append(name)

    def bad(name: str) -> Any:
        def fail(*a: Any, **kw: Any) -> None:
            calls.append(name)
            if armed:
                raise ValueError(name)

        return fail

    for callback in (ok("a"), bad("b"), ok("c"), bad("d"), ok("e")):
        bus.subscribe("c", callback)
    if warm:
        await bus.publish("c", *args, **kwargs)
        calls.clear()
        armed = True
    with pytest.raises(ChannelFailures) as caught:
        await bus.publish("c", *args, **kwargs)
    assert calls == ["a", "b", "c", "d", "e"]
    assert [str(exc) for exc in caught.value.exceptions] == ["b", "d"]
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


async def test_async_subscribers_run_one_after_the_other(bus: Bus[State]) -> None:
    log: list[str] = []

    def make(name: str) -> Any:
        async def sub() -> None:
            log.append(f"{name} in")
            await asyncio.sleep(0)
            log.append(f"{name} out")

        return sub

    bus.subscribe("c", make("a"))
    bus.subscribe("c", make("b"))
    await bus.publish("c")
    assert log == ["a in", "a out", "b in", "b out"]


async def test_async_callables_are_recognised(bus: Bus[State]) -> None:
    class Handler:
        async def __call__(self, x: int) -> int:
            return x + 1

    async def add(x: int, y: int) -> int:
        return x + y

    bus.subscribe("c", Handler())
    bus.subscribe("c", functools.partial(add, 10))
    assert await bus.publish("c", 1) == [2, 11]


async def test_plain_functions_returning_awaitables_are_awaited(bus: Bus[State]) -> None:
    bus.subscribe("c", lambda x: x)
    assert await bus.publish("c", 1) == [1]
    assert await bus.publish("c", 2) == [2]
    bus.subscribe("c", lambda x: asyncio.sleep(0, x * 10))
    for _ in range(2):
        assert await bus.publish("c", 3) == [3, 30]
    bus.subscribe("c", lambda x: asyncio.sleep(0, x * 100))
    assert await bus.publish("c", 4, *()) == [4, 40, 400]


async def test_a_generator_based_coroutine_is_awaited_and_a_generator_is_not(
    bus: Bus[State],
) -> None:
    def numbers(x: int) -> Generator[int, None, None]:
        yield x

    @types.coroutine
    def legacy(x: int) -> Generator[None, None, int]:
        yield  # a bare yield: once round the loop, as asyncio allows
        return x * 2

    bus.subscribe("c", numbers)
    [generator] = await bus.publish("c", 1)
    assert list(generator) == [1]  # a plain generator is a plain result
    bus.subscribe("c", legacy)  # the subscribers changed: results are checked again
    assert (await bus.publish("c", 2))[1] == 4  # a generator-based coroutine is awaited


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
@pytest.mark.parametrize("kind", ["sync", "async", "warm sync"])
async def test_fatal_exceptions_propagate_at_once(
    bus: Bus[State], error: type[BaseException], kind: str
) -> None:
    later: list[int] = []
    armed = kind != "warm sync"

    def fatal() -> None:
        if armed:
            raise error

    async def fatal_async() -> None:
        raise error

    bus.subscribe("c", fatal_async if kind == "async" else fatal)
    bus.subscribe("c", lambda: later.append(1))
    if not armed:
        await bus.publish("c")  # a clean publish first: its result types are known
        later.clear()
        armed = True
    with pytest.raises(error):
        await bus.publish("c")
    assert later == []


async def test_a_sync_publish_never_suspends(bus: Bus[State]) -> None:
    bus.subscribe("c", lambda x: x * 2)
    for channel, expected in (("c", [6]), ("c", [6]), ("nobody", [])):
        coroutine = bus.publish(channel, 3)
        with pytest.raises(StopIteration) as done:
            coroutine.send(None)  # runs to the end without yielding to a loop
        assert done.value.value == expected


async def test_subscribe_unsubscribe_and_introspection(bus: Bus[State]) -> None:
    def first() -> str:
        return "first"

    def second() -> str:
        return "second"

    assert not bus.has_subscribers("c")
    bus.subscribe("c", second)
    bus.subscribe("c", first, priority=10)
    bus.subscribe("c", second, priority=60)  # again: not twice, only the new priority
    assert bus.subscribers("c") == (first, second)
    assert bus.has_subscribers("c")
    assert bus.channels == ("c",)
    assert await bus.publish("c") == ["first", "second"]
    assert bus.unsubscribe("c", first) is True
    assert bus.unsubscribe("c", first) is False
    assert bus.unsubscribe("elsewhere", first) is False
    assert bus.unsubscribe("c", second) is True
    assert not bus.has_subscribers("c")
    assert bus.channels == ()
    assert await bus.publish("c") == []
    with pytest.raises(TypeError, match="not callable"):
        bus.subscribe("c", "not a function")  # type: ignore[arg-type]


async def test_on_is_a_decorator_that_returns_the_function(bus: Bus[State]) -> None:
    @bus.on(State.START, priority=10)
    def starting() -> str:
        return "starting"

    assert starting() == "starting"
    assert bus.subscribers(State.START) == (starting,)


@pytest.mark.parametrize("priority", [None, "10", float("nan"), True])
async def test_a_priority_that_is_not_a_number_is_refused(
    bus: Bus[State], priority: object
) -> None:
    """Refused when subscribing, so the channel is not broken for every later subscribe."""

    def early() -> str:
        return "early"

    def later() -> str:
        return "later"

    message = (
        rf"cannot subscribe .* to 'c': priority must be a number .*not {re.escape(repr(priority))}"
    )
    with pytest.raises(InvalidArgument, match=message):
        bus.subscribe("c", early, priority)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"a decorated function.*priority must be a number"):
        bus.on("c", priority)  # type: ignore[arg-type]
    assert not bus.has_subscribers("c")
    bus.subscribe("c", later)
    bus.subscribe("c", early, 10)  # the channel still sorts
    assert await bus.publish("c") == ["early", "later"]


async def test_priorities_of_any_real_number_sort(bus: Bus[State]) -> None:
    log: list[object] = []
    for priority in (float("inf"), 2.5, -1, fractions.Fraction(1, 3)):
        bus.subscribe("c", functools.partial(log.append, priority), priority)
    await bus.publish("c")
    assert log == [-1, fractions.Fraction(1, 3), 2.5, float("inf")]


def test_channel_failures_is_an_exception_group_and_an_archangel_error() -> None:
    failures = ChannelFailures("2 failed", [ValueError("v"), OSError("o")], "chan")
    assert isinstance(failures, ExceptionGroup)
    assert isinstance(failures, ArchangelError)
    matched, rest = failures.split(OSError)
    assert isinstance(matched, ChannelFailures)
    assert isinstance(rest, ChannelFailures)
    assert (matched.channel, rest.channel) == ("chan", "chan")
    caught: list[BaseException] = []
    try:
        raise failures
    except* OSError as group:
        caught.append(group)
    except* ValueError:
        pass
    assert isinstance(caught[0], ChannelFailures)


# -- emit, ask, pipe (rel's util) -----------------------------------------------------------


async def test_emit_returns_the_publishing_task(bus: Bus[State]) -> None:
    bus.subscribe("c", lambda x: x + 1)
    task = bus.emit("c", 1)
    assert isinstance(task, asyncio.Task)
    assert await task == [2]


async def test_emit_logs_failures_instead_of_raising(
    bus: Bus[State], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    bus.subscribe("c", broken)
    task = bus.emit("c")
    assert isinstance(task, asyncio.Task)
    await asyncio.wait([task])
    await asyncio.sleep(0)  # let the done callback run
    assert "emitted message to 'c' failed" in caplog.text
    assert "RuntimeError: boom" in caplog.text


async def test_emit_from_another_thread_runs_on_the_bus_loop(bus: Bus[State]) -> None:
    await bus.transition(State.RUN)  # the bus now knows its loop
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[int] = loop.create_future()
    bus.subscribe("signal", lambda: arrived.set_result(threading.get_ident()))
    handle = await asyncio.to_thread(bus.emit, "signal")
    assert not isinstance(handle, asyncio.Task)  # a loop handle (uvloop has its own class)
    assert callable(handle.cancel)
    async with asyncio.timeout(5):
        assert await arrived == threading.get_ident()


def test_emit_without_any_loop_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="has no event loop"):
        Bus().emit("c")


async def test_ask_returns_the_first_answer_that_is_not_none(bus: Bus[State]) -> None:
    asked: list[str] = []

    def silent(question: str) -> None:
        asked.append("silent")

    async def answers(question: str) -> str:
        asked.append("answers")
        return question.upper()

    def never(question: str) -> str:
        asked.append("never")
        return "too late"

    assert await bus.ask("q", "hi") is None
    bus.subscribe("q", silent, priority=1)
    bus.subscribe("q", answers, priority=2)
    bus.subscribe("q", never, priority=3)
    assert await bus.ask("q", "hi") == "HI"
    assert asked == ["silent", "answers"]


async def test_ask_stops_at_a_failure(bus: Bus[State]) -> None:
    def broken() -> None:
        raise KeyError("k")

    bus.subscribe("q", broken)
    bus.subscribe("q", lambda: "answer")
    with pytest.raises(ChannelFailures) as caught:
        await bus.ask("q")
    assert [type(exc) for exc in caught.value.exceptions] == [KeyError]


async def test_pipe_chains_results_until_stop(bus: Bus[State]) -> None:
    assert await bus.pipe("p", 1) == 1
    seen: list[int] = []
    bus.subscribe("p", lambda x, step: x + step, priority=1)

    async def double(x: int, step: int) -> int:
        return x * 2

    bus.subscribe("p", double, priority=2)
    assert await bus.pipe("p", 1, 3) == 8

    def stop_big(x: int, step: int) -> Any:
        seen.append(x)
        return STOP if x > 5 else x

    bus.subscribe("p", stop_big, priority=3)
    bus.subscribe("p", lambda x, step: seen.append(-1), priority=4)
    assert await bus.pipe("p", 1, 3) == 8  # the value STOP was given
    assert seen == [8]
    assert repr(STOP) == "archangel.STOP"


async def test_pipe_stops_at_a_failure(bus: Bus[State]) -> None:
    bus.subscribe("p", lambda x: 1 / x)
    with pytest.raises(ChannelFailures) as caught:
        await bus.pipe("p", 0)
    assert [type(exc) for exc in caught.value.exceptions] == [ZeroDivisionError]


# -- when / transpire (rel's latches) -------------------------------------------------------


async def test_when_waits_for_transpire_and_fires_once(bus: Bus[State]) -> None:
    calls: list[tuple[str, Any]] = []
    bus.when("ready", lambda *a, **kw: calls.append(("first", (a, kw))), 1, x=2)
    bus.when("ready", lambda: calls.append(("second", None)))
    assert calls == []
    assert bus.transpire("ready") is True
    assert calls == [("first", ((1,), {"x": 2})), ("second", None)]
    assert bus.transpire("ready") is False  # a second transpire does nothing
    assert len(calls) == 2
    bus.when("ready", lambda: calls.append(("late", None)))  # after: runs at once
    assert calls[-1] == ("late", None)


async def test_when_with_a_coroutine_function_runs_it_as_a_task(bus: Bus[State]) -> None:
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def ready(value: str) -> None:
        done.set_result(value)

    bus.when("ready", ready, "yes")
    bus.transpire("ready")
    async with asyncio.timeout(5):
        assert await done == "yes"


async def test_a_failing_async_latch_callback_is_logged(
    bus: Bus[State], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise LookupError("gone")

    bus.transpire("ready")
    bus.when("ready", broken)
    async with asyncio.timeout(5):
        while "callback waiting for 'ready' failed" not in caplog.text:
            await asyncio.sleep(0)
    assert "LookupError: gone" in caplog.text


def test_an_async_latch_callback_outside_a_loop_is_an_error() -> None:
    async def ready() -> None:
        pass

    bus = Bus()
    bus.transpire("ready")
    with pytest.raises(RuntimeError, match="needs a running loop"):
        bus.when("ready", ready)


async def test_transpire_gathers_failures_and_still_transpires(bus: Bus[State]) -> None:
    calls: list[int] = []

    def broken() -> None:
        raise ValueError("x")

    bus.when("e", broken)
    bus.when("e", lambda: calls.append(1))
    with pytest.raises(ChannelFailures, match="1 of 2 callbacks waiting for 'e' failed"):
        bus.transpire("e")
    assert calls == [1]
    assert bus.transpire("e") is False


# -- walks with a deadline (an app's bounded stop) -------------------------------------------


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> float:
    """A shorter DEADLINE_GRACE, to keep the tests of the mechanism quick."""
    monkeypatch.setattr(channels, "DEADLINE_GRACE", 0.1)
    return 0.1


async def test_a_subscriber_still_running_at_the_deadline_is_cancelled_and_the_walk_goes_on(
    bus: Bus[State], caplog: pytest.LogCaptureFixture, short_grace: float
) -> None:
    log: list[object] = []
    recorder(bus, log)
    cancelled = asyncio.Event()

    async def hung_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def quick_stop() -> str:
        await asyncio.sleep(0)
        log.append("quick stop ended")
        return "done"

    bus.subscribe(State.STOP, hung_stop, priority=40)
    bus.subscribe(State.STOP, quick_stop, priority=60)
    await bus.transition(State.RUN)
    log.clear()
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.ERROR, logger="archangel.bus.channels"):
        async with asyncio.timeout(30):
            kept = (await bus.transition(State.EXITED, deadline=loop.time() + 0.05)).kept
    assert kept is False
    assert cancelled.is_set()
    # Past the deadline the next subscriber still gets DEADLINE_GRACE from its start.
    assert log == [State.STOP, "quick stop ended", State.IDLE, State.EXIT, State.EXITED]
    assert bus.state is State.EXITED
    assert bus.error is None  # cut short is not a failure: no error path
    [hung] = [r.getMessage() for r in caplog.records]
    assert re.search(
        r"subscriber <function .*hung_stop.*> of <State.STOP> still running at the deadline, "
        r"awaiting in .*hung_stop at .*test_channels.py:\d+, on a future: cancelled",
        hung,
    ), hung


async def test_a_walk_begun_past_its_deadline_still_gives_each_subscriber_the_grace(
    bus: Bus[State],
) -> None:
    assert channels.DEADLINE_GRACE == 1.0  # documented
    ran: list[str] = []

    async def release_pidfile() -> None:
        ran.append("released")
        for _ in range(3):
            await asyncio.sleep(0)
        ran.append("done")

    bus.subscribe(State.EXIT, release_pidfile)
    bus.subscribe(State.EXIT, lambda: ran.append("sync"))
    deadline = asyncio.get_running_loop().time() - 1  # long past
    assert (await bus.transition(State.EXITED, deadline=deadline)).kept is True
    assert ran == ["released", "done", "sync"]


async def test_a_walk_that_keeps_its_deadline_returns_true_and_results_are_as_usual(
    bus: Bus[State],
) -> None:
    results: list[object] = []

    async def quick() -> int:
        await asyncio.sleep(0)
        return 1

    def failing() -> None:
        raise OSError("disk full")

    bus.subscribe(State.START, quick)
    bus.subscribe(State.RUN, lambda: results.append("run"))
    deadline = asyncio.get_running_loop().time() + 60
    assert (await bus.transition(State.RUN, deadline=deadline)).kept is True
    assert (await bus.transition(State.STOP)).kept is True  # no deadline: always kept
    bus.subscribe(State.EXIT, failing)
    with pytest.raises(ChannelFailures) as caught:  # a failure still takes the error path
        await bus.transition(State.EXITED, deadline=deadline)
    assert bus.state is State.EXITED
    assert caught.value.exceptions[0].channel is State.EXIT
    assert results == ["run"]


async def test_a_subscriber_that_ignores_its_cancellation_is_left_behind(
    bus: Bus[State], caplog: pytest.LogCaptureFixture, short_grace: float
) -> None:
    release = asyncio.Event()
    ended = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # ignores the cancellation
        ended.set()

    async def late_and_hung() -> None:
        await asyncio.Event().wait()

    bus.subscribe(State.EXIT, stubborn)
    bus.subscribe(State.EXIT, late_and_hung)  # starts past the deadline: cut after its grace
    exited: list[State] = []
    bus.subscribe(State.EXITED, lambda: exited.append(State.EXITED))
    deadline = asyncio.get_running_loop().time() + 0.01
    with caplog.at_level(logging.ERROR, logger="archangel.bus.channels"):
        async with asyncio.timeout(30):
            assert (await bus.transition(State.EXITED, deadline=deadline)).kept is False
    assert exited == [State.EXITED]  # the walk went on without them
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "stubborn" in messages[0] and "still running at the deadline" in messages[0]
    assert "stubborn" in messages[1]
    assert "did not end within 0.1 s of being cancelled: left behind" in messages[1]
    assert "late_and_hung" in messages[2] and "still running at the deadline" in messages[2]
    assert not ended.is_set()
    release.set()
    async with asyncio.timeout(10):
        await ended.wait()


async def test_cancelling_a_walk_with_a_deadline_cancels_its_subscriber(bus: Bus[State]) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def hang() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def reenter() -> None:
        await bus.transition(State.EXITED)

    bus.subscribe(State.START, hang)
    deadline = asyncio.get_running_loop().time() + 60
    walk = asyncio.create_task(bus.transition(State.RUN, deadline=deadline))
    await entered.wait()
    walk.cancel()
    with pytest.raises(asyncio.CancelledError):
        await walk
    async with asyncio.timeout(10):
        await cancelled.wait()
    assert bus.state is State.START
    # A subscriber of a walk with a deadline runs in a task of its own, and still
    # cannot wait for the walk it is part of.
    bus.unsubscribe(State.START, hang)
    bus.subscribe(State.STOP, reenter)
    with pytest.raises(ChannelFailures) as caught:
        await bus.transition(State.EXITED, deadline=deadline)
    assert "would wait for itself" in str(caught.value.exceptions[0].exceptions[0])


def test_a_callback_that_cannot_be_called_is_refused_naming_it() -> None:
    from archangel import NotCallable

    bus = channels.Channels()
    with pytest.raises(NotCallable, match=r"cannot subscribe 'print' to 'x': not callable"):
        bus.subscribe("x", "print")  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # what Python raises for the same mistake, too
        bus.subscribe("x", 42)  # type: ignore[arg-type]
    assert bus.subscribers("x") == ()


@pytest.mark.parametrize("proven", [False, True])
async def test_a_plain_subscriber_that_runs_past_the_deadline_is_reported_and_cuts_the_walk(
    bus: Bus[State], caplog: pytest.LogCaptureFixture, proven: bool
) -> None:
    import time

    def slow_stop() -> None:
        time.sleep(0.2)  # nothing can interrupt it

    bus.subscribe(State.STOP, slow_stop)
    await bus.transition(State.RUN)
    if proven:  # a channel already published once is proven plain: its fast path
        await bus.publish(State.STOP)
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING, logger="archangel.bus.channels"):
        results = await bus.transition(State.EXITED, deadline=loop.time() + 0.05)
    assert results.kept is False  # the stop went past its bound: an App's is forced
    assert bus.state is State.EXITED and bus.error is None
    [overran] = [r.getMessage() for r in caplog.records]
    who = "its plain subscribers" if proven else r"subscriber <function .*slow_stop.*>"
    assert re.search(rf"{who} of <State.STOP> ran 0.\d s, past the deadline by 0.\d s", overran)
