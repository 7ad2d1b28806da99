"""Time on the loop's clock (bus/timers.py): the event queue, bus.schedule, repeating timers.

Ports pyzenkit's event queue order and rel's timers that repeat while truthy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from archangel.bus.bus import Bus
from archangel.bus.queue import EventQueue
from archangel.bus.states import State
from archangel.bus.timers import every, next_deadline
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


# -- timers (rel's timeout: repeat while the callback returns true) -------------------------
#
# On the virtual clock (the conftest's ``clock``): each tick comes when the test
# advances the clock to it, and work inside a tick is ``clock.stall``.


async def test_every_repeats_while_truthy(bus: Bus[State], clock: VirtualClockLoop) -> None:
    calls: list[tuple[int, int, float]] = []
    start = clock.time()

    def tick(a: int, b: int) -> bool:
        calls.append((a, b, clock.time() - start))
        return len(calls) < 3

    timer = bus.every(0.005, tick, 1, 2)
    assert timer.active
    await clock.advance(0.004)
    assert calls == []  # the first call comes one interval after the timer is made
    await clock.advance(1)
    assert calls == [(1, 2, pytest.approx(0.005 * n)) for n in (1, 2, 3)]
    assert (timer.ticks, timer.cancelled, timer.deadline) == (3, False, None)
    assert "[done] ticks=3" in repr(timer)


async def test_a_timer_runs_on_the_real_loops(bus: Bus[State]) -> None:
    """The same timer on the real clock of each loop (asyncio, uvloop)."""
    calls: list[tuple[int, int]] = []

    def tick(a: int, b: int) -> bool:
        calls.append((a, b))
        return len(calls) < 3

    timer = bus.every(0.005, tick, 1, 2)
    async with asyncio.timeout(5):
        while timer.active:
            await asyncio.sleep(0.005)
    assert calls == [(1, 2)] * 3
    assert (timer.ticks, timer.cancelled, timer.deadline) == (3, False, None)


async def test_a_first_delay_then_the_grid_from_it(clock: VirtualClockLoop) -> None:
    start = clock.time()
    times: list[float] = []
    timer = every(
        clock, 1.0, lambda: times.append(clock.time() - start) or len(times) < 3, delay=0
    )
    await clock.advance(0)
    assert times == [0.0]  # delay=0: at the loop's next iteration
    await clock.advance(5)
    assert times == [0.0, 1.0, 2.0]
    assert not timer.active
    for bad in (-1, float("nan")):
        with pytest.raises(InvalidArgument, match="first delay"):
            every(clock, 1.0, lambda: True, delay=bad)


async def test_every_awaits_async_callbacks_before_rearming(clock: VirtualClockLoop) -> None:
    running = 0
    overlaps = 0
    calls = 0

    async def tick() -> bool:
        nonlocal running, overlaps, calls
        running += 1
        overlaps = max(overlaps, running)
        await asyncio.sleep(0.012)  # longer than the interval
        running -= 1
        calls += 1
        return calls < 3

    timer = every(clock, 0.005, tick)
    await clock.advance(1)
    assert calls == 3
    assert overlaps == 1
    assert not timer.active
    # Each call ends 0.012 after its deadline: the next two deadlines have passed.
    assert timer.missed == 4


async def test_a_failing_tick_is_logged_and_the_timer_goes_on(
    bus: Bus[State], clock: VirtualClockLoop, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def tick() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return calls < 3

    timer = bus.every(0.005, tick)
    await clock.advance(1)
    assert not timer.active
    assert calls == 3
    assert "tick 1 failed; the timer goes on" in caplog.text
    assert "OSError: disk full" in caplog.text


@pytest.mark.parametrize("error", [OSError, asyncio.CancelledError])
async def test_a_failing_sync_tick_is_logged_and_the_timer_goes_on(
    bus: Bus[State],
    clock: VirtualClockLoop,
    caplog: pytest.LogCaptureFixture,
    error: type[BaseException],
) -> None:
    calls = 0

    def tick() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error("disk full")
        return calls < 3

    timer = bus.every(0.005, tick)
    await clock.advance(1)
    assert not timer.active
    assert calls == 3
    assert "tick 1 failed; the timer goes on" in caplog.text
    assert f"{error.__name__}: disk full" in caplog.text


async def test_an_async_tick_cancelled_from_inside_goes_on(
    bus: Bus[State], clock: VirtualClockLoop, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def tick() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            await cancelled_inside()
        return calls < 3

    timer = bus.every(0.005, tick)
    await clock.advance(1)
    assert not timer.active
    assert calls == 3
    assert not timer.cancelled
    assert "tick 1 was cancelled; the timer goes on" in caplog.text


async def test_cancel_stops_the_timer(bus: Bus[State], clock: VirtualClockLoop) -> None:
    calls = 0

    def tick() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            timer.cancel()  # from inside: this call is the last
        return True

    timer = bus.every(0.005, tick)
    await clock.advance(1)
    assert calls == 2
    assert timer.cancelled and not timer.active
    timer.cancel()  # idempotent
    assert "[cancelled]" in repr(timer)


async def test_cancel_cancels_an_async_call_in_progress(
    bus: Bus[State], clock: VirtualClockLoop, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def tick() -> bool:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    timer = bus.every(0.001, tick)
    await clock.advance(0.001)
    assert started.is_set()
    timer.cancel()
    await clock.advance(0)
    assert cancelled.is_set()
    assert not timer.active
    await clock.advance(1)
    assert timer.ticks == 1
    assert "was cancelled" not in caplog.text  # a stop, not a failure to log


async def test_deadlines_do_not_drift(bus: Bus[State], clock: VirtualClockLoop) -> None:
    ticks: list[tuple[float | None, float, int]] = []

    def tick() -> bool:
        ticks.append((timer.deadline, clock.time(), timer.missed))
        clock.stall(0.002)  # work that would push a naive timer later each time
        return len(ticks) < 5

    timer = bus.every(0.01, tick)
    first = timer.deadline
    assert first is not None
    await clock.advance(1)
    # Every call comes at its deadline, on the grid first + n * interval.
    grid = [first + k * 0.01 for k in range(5)]
    assert [deadline for deadline, _, _ in ticks] == pytest.approx(grid, abs=1e-9)
    assert [now for _, now, _ in ticks] == pytest.approx(grid, abs=1e-9)
    assert [missed for _, _, missed in ticks] == [0] * 5


async def test_missed_ticks_are_skipped_not_bunched(
    bus: Bus[State], clock: VirtualClockLoop
) -> None:
    calls: list[tuple[float, float]] = []

    def tick() -> bool:
        calls.append((timer.deadline, clock.time()))  # type: ignore[arg-type]
        if len(calls) == 1:
            clock.stall(0.045)  # the loop is blocked past four deadlines
        return len(calls) < 3

    timer = bus.every(0.01, tick)
    start = clock.time()
    await clock.advance(1)
    assert timer.missed == 4
    deadlines = [deadline - start for deadline, _ in calls]
    assert deadlines == pytest.approx([0.01, 0.06, 0.07], abs=1e-9)  # on the grid, no burst
    assert [now - start for _, now in calls] == pytest.approx(deadlines, abs=1e-9)


async def test_a_tick_the_loop_was_late_for_runs_once_late_then_the_grid(
    clock: VirtualClockLoop,
) -> None:
    calls: list[tuple[float, float]] = []
    start = clock.time()
    timer = every(clock, 1.0, lambda: calls.append((timer.deadline, clock.time())) or True)
    await clock.advance(1.0)
    clock.stall(2.5)  # blocked from 1.0 to 3.5: the deadlines 2.0 and 3.0 pass
    await clock.advance(1.0)
    timer.cancel()
    flat = [t - start for call in calls for t in call]
    assert flat == pytest.approx([1.0, 1.0, 2.0, 3.5, 4.0, 4.0])  # (deadline, run at) each
    assert timer.missed == 1


def test_next_deadline_is_the_one_rule() -> None:
    assert next_deadline(10.0, 1.0, 10.5) == (11.0, 0)
    assert next_deadline(10.0, 1.0, 11.0) == (12.0, 1)  # due at now: already missed
    assert next_deadline(10.0, 1.0, 13.5) == (14.0, 3)
    assert next_deadline(10.0, 0.25, 10.0) == (10.25, 0)


async def test_close_cancels_timers_and_bad_intervals_are_refused(bus: Bus[State]) -> None:
    timer = bus.every(60, lambda: True)
    bus.close()
    assert timer.cancelled and not timer.active
    with pytest.raises(InvalidArgument, match="positive"):
        bus.every(0, lambda: True)


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


# -- timers: the first call at once, re-arming (mode's exec_first, rel's add) --------------


async def test_every_with_delay_zero_calls_at_once_then_on_the_grid(
    bus: Bus[State], clock: VirtualClockLoop
) -> None:
    start = clock.time()
    times: list[float] = []
    timer = bus.every(1.0, lambda: times.append(clock.time() - start) or len(times) < 3, delay=0)
    await clock.advance(0)
    assert times == [0.0]
    await clock.advance(5)
    assert times == [0.0, 1.0, 2.0] and not timer.active
    later = bus.every(1.0, lambda: times.append(clock.time() - start), delay=0.5)
    await clock.advance(0.5)
    assert times[-1] == 5.5 and not later.active  # returned None: over after one call
    with pytest.raises(InvalidArgument, match="first delay must be >= 0, not -1"):
        bus.every(1.0, lambda: True, delay=-1)


async def test_a_cancelled_timer_can_be_rearmed_with_a_new_delay(
    bus: Bus[State], clock: VirtualClockLoop
) -> None:
    start = clock.time()
    times: list[float] = []
    timer = bus.every(1.0, lambda: times.append(clock.time() - start) or True)
    await clock.advance(1.5)
    timer.cancel()
    await clock.advance(10)
    assert times == [1.0]
    timer.rearm(3)
    assert (timer.active, timer.cancelled, timer.deadline) == (True, False, start + 14.5)
    assert "[active]" in repr(timer)
    await clock.advance(5)
    assert times == [1.0, 14.5, 15.5, 16.5]  # a new grid from the new delay
    timer.rearm()  # an active timer: its next deadline moves, one interval from now
    await clock.advance(1)
    assert times[-1] == 17.5 and timer.ticks == 5
    with pytest.raises(InvalidArgument, match=r"rearm\(\) delay must be >= 0, not -1"):
        timer.rearm(-1)
    bus.close()
    assert timer.cancelled


async def test_an_ended_timer_rearmed_is_still_the_bus_s_to_close(
    bus: Bus[State], clock: VirtualClockLoop
) -> None:
    calls = 0

    def once() -> bool:
        nonlocal calls
        calls += 1
        return False

    timer = bus.every(1.0, once)
    bus.every(1.0, lambda: False)  # the bus prunes nothing it must still close
    await clock.advance(2)
    assert (calls, timer.active) == (1, False)
    timer.rearm(0)
    await clock.advance(0)
    assert calls == 2
    timer.rearm(1)
    bus.close()
    await clock.advance(5)
    assert calls == 2 and timer.cancelled


async def test_rearm_from_inside_a_call_holds_once_the_call_is_over(
    bus: Bus[State], clock: VirtualClockLoop
) -> None:
    start = clock.time()
    times: list[float] = []

    def tick() -> bool:
        times.append(clock.time() - start)
        if len(times) == 2:
            timer.rearm(0.25)  # wins over the grid and over the falsy return
            return False
        return len(times) < 4

    timer = bus.every(1.0, tick)
    await clock.advance(10)
    assert times == [1.0, 2.0, 2.25, 3.25]
    assert clock._next_due() is None  # armed once, never twice

    async def slow() -> bool:
        times.append(clock.time() - start)
        if len(times) == 1:
            slow_timer.rearm(0)
        clock.stall(0.5)
        await asyncio.sleep(0)
        return len(times) < 7

    times.clear()
    start = clock.time()
    slow_timer = bus.every(1.0, slow)
    await clock.advance(10)
    assert len(times) == 7
    assert times[:2] == [1.0, 1.5]  # re-armed at 1.0 with 0: right after the call, not at 2.0


async def test_rearm_from_outside_cancels_an_async_call_in_progress(
    bus: Bus[State], clock: VirtualClockLoop
) -> None:
    cancelled = 0
    running = 0
    overlaps = 0

    async def tick() -> bool:
        nonlocal cancelled, running, overlaps
        running += 1
        overlaps += running > 1
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        finally:
            running -= 1
        return True

    timer = bus.every(1.0, tick)
    await clock.advance(1.25)  # the first call is under way
    timer.rearm(0)
    await clock.advance(0)
    assert cancelled == 1
    await clock.advance(3)
    assert (timer.ticks, overlaps, cancelled) == (5, 0, 1)  # 1, then 1.25 (rearm) to 4.25


async def test_a_timer_is_rearmed_on_the_real_loops(bus: Bus[State]) -> None:
    calls = 0
    again = asyncio.Event()

    def tick() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            again.set()
        return True

    timer = bus.every(3600, tick, delay=0)
    async with asyncio.timeout(5):
        while calls < 1:
            await asyncio.sleep(0)
        timer.cancel()
        timer.rearm(0)
        await again.wait()
    assert timer.active and timer.ticks == 2
    timer.cancel()
