"""The bus's queue (bus/queue.py): the event queue, bus.schedule, cancelling and counting events.

Ports pyzenkit's event queue order.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from archangel.bus.bus import Bus
from archangel.bus.queue import EventQueue
from archangel.bus.states import State
from archangel.errors import InvalidArgument
from tests.conftest import VirtualClockLoop

# -- the event queue (pyzenkit's EventQueueManager) -----------------------------------------


def test_event_queue_order_without_a_loop() -> None:
    queue: EventQueue[str] = EventQueue()
    assert queue.pop_due(0.0) is None
    assert queue.next_deadline() is None
    queue.push("a")
    queue.push("b")
    queue.push_front("x")
    queue.push_front("y")  # schedule_next: LIFO at the front
    queue.push_at(10.0, "late")
    queue.push_at(5.0, "soon")
    assert len(queue) == 6
    assert queue.next_deadline() == 5.0
    assert [queue.pop_due(1.0) for _ in range(4)] == ["y", "x", "a", "b"]
    assert queue.pop_due(1.0) is None  # timed events are not due yet
    queue.push("c")
    assert queue.pop_due(7.0) == "soon"  # a due timed event beats the queued one
    assert queue.pop_due(7.0) == "c"
    assert queue.pop_due(20.0) == "late"
    assert repr(queue) == "<EventQueue 0 queued, 0 timed>"


def test_event_queue_same_deadline_keeps_the_order_and_never_compares_events() -> None:
    queue: EventQueue[dict[str, int]] = EventQueue()
    events = [{"n": n} for n in range(50)]  # dicts cannot be ordered
    for event in events:
        queue.push_at(1.0, event)
    assert [queue.pop_due(1.0) for _ in events] == events
    queue.push("a")
    queue.push_at(1.0, {"n": -1})
    assert queue.clear() == 2
    assert len(queue) == 0


async def drained(bus: Bus[State], channel: str, count: int, log: list[Any]) -> None:
    """Wait until ``count`` messages on ``channel`` have been logged."""
    done = asyncio.get_running_loop().create_future()

    def note(*args: Any) -> None:
        log.append(args[0] if len(args) == 1 else args)
        if len(log) == count and not done.done():
            done.set_result(None)

    bus.subscribe(channel, note)
    async with asyncio.timeout(5):
        await done


async def test_schedule_is_fifo_and_schedule_next_lifo_at_the_front(bus: Bus[State]) -> None:
    log: list[Any] = []
    bus.schedule("e", "a")
    bus.schedule("e", "b")
    bus.schedule_next("e", "x")
    bus.schedule("e", "y", first=True)
    await drained(bus, "e", 4, log)
    assert log == ["y", "x", "a", "b"]


async def test_a_due_timed_event_beats_queued_ones(bus: Bus[State]) -> None:
    log: list[Any] = []
    loop = asyncio.get_running_loop()
    bus.schedule("e", "a")
    bus.schedule("e", "b")
    bus.schedule_at(loop.time() - 1, "e", "timed")
    await drained(bus, "e", 3, log)
    assert log == ["timed", "a", "b"]


async def test_events_due_at_the_same_instant_run_in_schedule_order(bus: Bus[State]) -> None:
    log: list[Any] = []
    when = asyncio.get_running_loop().time()
    payloads = [{"n": n} for n in range(20)]  # not orderable: must never be compared
    for payload in payloads:
        bus.schedule("e", payload, at=when)
    await drained(bus, "e", 20, log)
    assert log == payloads


async def test_delayed_events_wait_and_new_events_do_not(bus: Bus[State]) -> None:
    log: list[Any] = []
    bus.schedule_after(0.02, "e", "delayed")
    bus.schedule("e", "now", delay=None)
    await drained(bus, "e", 2, log)
    assert log == ["now", "delayed"]
    bus.schedule("e", "far", delay=60)
    await asyncio.sleep(0)  # the drainer is now asleep until the far deadline
    bus.schedule("e", "prompt")
    async with asyncio.timeout(5):
        while len(log) < 3:
            await asyncio.sleep(0)
    assert log[-1] == "prompt"


async def test_one_publish_at_a_time_and_failures_do_not_stop_the_queue(
    bus: Bus[State], caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    gate = asyncio.Event()

    async def first(name: str) -> None:
        log.append(f"{name} in")
        if name == "a":
            await gate.wait()
        log.append(f"{name} out")
        if name == "b":
            raise ValueError("b is bad")

    bus.subscribe("e", first)
    for name in ("a", "b", "c"):
        bus.schedule("e", name)
    await bus.wait(State.INITIAL)
    for _ in range(5):
        await asyncio.sleep(0)
    assert log == ["a in"]
    gate.set()
    async with asyncio.timeout(5):
        while len(log) < 6:
            await asyncio.sleep(0)
    assert log == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert "scheduled message to 'e' failed" in caplog.text


async def cancelled_inside() -> None:
    """Await an operation that was cancelled: a CancelledError, though nobody cancelled us."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def test_a_subscriber_cancelled_from_inside_does_not_stop_the_queue(
    bus: Bus[State], caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    async def deliver(name: str) -> None:
        if name == "a":
            await cancelled_inside()
        log.append(name)

    bus.subscribe("e", deliver)
    for name in ("a", "b", "c"):
        bus.schedule("e", name)
    async with asyncio.timeout(5):
        while len(log) < 2:
            await asyncio.sleep(0)
    assert log == ["b", "c"]
    assert "scheduled message to 'e' was cancelled" in caplog.text


async def test_close_still_stops_a_message_in_progress(
    bus: Bus[State], caplog: pytest.LogCaptureFixture
) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def hang(name: str) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bus.subscribe("e", hang)
    bus.schedule("e", "a")
    async with asyncio.timeout(5):
        await entered.wait()
        bus.close()
        await cancelled.wait()
    for _ in range(3):
        await asyncio.sleep(0)
    assert "was cancelled" not in caplog.text  # a stop, not a failure to log


async def test_schedule_refuses_contradictory_arguments(bus: Bus[State]) -> None:
    with pytest.raises(InvalidArgument, match="delay or at"):
        bus.schedule("e", delay=1, at=2)
    with pytest.raises(InvalidArgument, match="first=True"):
        bus.schedule("e", first=True, delay=1)


async def test_schedule_at_a_wall_clock_time_is_refused_naming_both_clocks(
    bus: Bus[State],
) -> None:
    """pyzenkit's schedule_at takes time.time(); on the loop's clock it would never come."""
    message = (
        r"schedule\(at=\.\.\.\): [\d.]+ is a wall-clock time \(time.time\(\) is [\d.]+\), "
        r"but deadlines are on the loop's clock \(loop.time\(\) is [\d.]+\): pass "
        r"loop.time\(\) \+ \(when - time.time\(\)\), or delay=when - time.time\(\)"
    )
    with pytest.raises(InvalidArgument, match=message):
        bus.schedule("e", at=time.time() + 5)
    with pytest.raises(InvalidArgument, match="is a wall-clock time"):
        bus.schedule_at(time.time() - 5, "e")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidArgument, match="is not a finite loop time"):
            bus.schedule("e", at=bad)
        with pytest.raises(InvalidArgument, match="delay must be a finite number"):
            bus.schedule("e", delay=bad)
    # Converted as the message says, it fires.
    log: list[Any] = []
    when = time.time() + 0.01
    loop = asyncio.get_running_loop()
    bus.schedule("e", "converted", at=loop.time() + (when - time.time()))
    bus.schedule_after(when - time.time(), "e", "as a delay")
    await drained(bus, "e", 2, log)
    assert sorted(log) == ["as a delay", "converted"]


async def test_close_drops_the_queue_and_says_so(
    bus: Bus[State], caplog: pytest.LogCaptureFixture
) -> None:
    log: list[Any] = []
    bus.subscribe("e", log.append)
    bus.schedule("e", "far", delay=60)
    await asyncio.sleep(0)
    bus.close()
    bus.close()
    assert "closed with 1 scheduled messages not sent" in caplog.text
    bus.schedule("e", "again")  # the bus stays usable
    async with asyncio.timeout(5):
        while not log:
            await asyncio.sleep(0)
    assert log == ["again"]


# -- cancelling scheduled events, counting them (deadbeat's dequeue, pyzenkit's count/when) --


def test_event_queue_remove_by_identity_and_next_due_without_a_loop() -> None:
    queue: EventQueue[list[str]] = EventQueue()
    a, b, twin = ["a"], ["b"], ["a"]  # twin == a, but another event
    t1, t2, t3 = ["t1"], ["t2"], ["t3"]
    assert queue.next_due(100.0) is None
    for event in (a, twin, b):
        queue.push(event)
    for deadline, event in ((30.0, t3), (10.0, t1), (20.0, t2)):
        queue.push_at(deadline, event)
    assert queue.next_due(5.0) == 5.0  # a sequential event is due now
    assert queue.next_due(15.0) == 10.0  # an overdue timed one, earlier still
    assert queue.remove(twin) and not queue.remove(twin)
    assert queue.remove(t1)
    assert not queue.remove(["t2"])  # equal is not enough
    assert len(queue) == 4 and sorted(map(tuple, queue)) == [("a",), ("b",), ("t2",), ("t3",)]
    assert [queue.pop_due(100.0) for _ in range(4)] == [t2, t3, a, b]  # the heap still holds
    queue.push_at(7.0, t1)
    assert queue.next_due(1.0) == 7.0  # only timed events: the earliest deadline


async def test_a_scheduled_event_can_be_cancelled_before_it_is_sent(bus: Bus[State]) -> None:
    log: list[Any] = []
    a = bus.schedule("e", "a")
    b = bus.schedule("e", "b")
    bus.schedule_next("e", "c")
    far = bus.schedule_after(3600, "e", "far")
    assert (a.pending, b.pending, far.deadline is not None, a.deadline) == (True, True, True, None)
    assert b.cancel() is True
    assert b.cancel() is False  # once
    assert (b.cancelled, b.pending) == (True, False)
    assert far.cancel() is True
    assert bus.queued == 2
    await drained(bus, "e", 2, log)
    assert log == ["c", "a"]
    assert (a.pending, a.cancelled, a.cancel()) == (False, False, False)  # sent: too late
    assert bus.queued == 0 and bus.next_due is None
    assert "[cancelled]" in repr(b) and "'e' queued" in repr(b) and "[sent]" in repr(a)


async def test_close_counts_dropped_events_as_cancelled(bus: Bus[State]) -> None:
    event = bus.schedule_after(3600, "e", "late")
    bus.close()
    assert event.cancelled and not event.pending
    assert event.cancel() is False


async def test_the_bus_tells_how_many_events_wait_and_when_the_next_is_due(
    bus: Bus[State], clock: VirtualClockLoop
) -> None:
    log: list[Any] = []
    bus.subscribe("e", log.append)
    start = clock.time()
    assert (bus.queued, bus.next_due) == (0, None)
    five = bus.schedule_after(5, "e", 5)
    bus.schedule_at(start + 2, "e", 2)
    assert (bus.queued, bus.next_due) == (2, start + 2)
    bus.schedule("e", 0)
    assert (bus.queued, bus.next_due) == (3, start)  # an untimed event goes at once
    await clock.advance(0)
    assert log == [0]
    assert (bus.queued, bus.next_due) == (2, start + 2)
    await clock.advance(2)
    assert log == [0, 2]
    assert (bus.queued, bus.next_due) == (1, start + 5)
    assert five.cancel()
    assert (bus.queued, bus.next_due) == (0, None)
    await clock.settle()
    assert clock._next_due() is None  # the queue's alarm for it went with it
    await clock.advance(10)
    assert log == [0, 2]


async def test_queued_events_can_go_through_the_callback_chain(bus: Bus[State]) -> None:
    from archangel import STOP

    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    bus.subscribe("calc", lambda value, step: value + step, priority=10)

    async def double(value: int, step: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    bus.subscribe("calc", double, priority=20)
    bus.subscribe("calc", lambda value, step: done.set_result(value) or STOP, priority=30)
    bus.subscribe("calc", lambda value, step: pytest.fail("after STOP"), priority=40)
    event = bus.schedule("calc", 3, 1, pipe=True)
    assert event.piped and "<ScheduledEvent pipe 'calc'" in repr(event)
    async with asyncio.timeout(5):
        assert await done == 8  # (3 + 1) * 2: each subscriber got the previous result
    with pytest.raises(InvalidArgument, match=r"schedule\('calc', pipe=True\) needs the value"):
        bus.schedule("calc", pipe=True)
    assert bus.queued == 0
