"""Timers on the loop's clock (bus/timers.py): bus.every, repeating timers, re-arming.

Ports rel's timers that repeat while truthy. The event queue and bus.schedule
are test_queue.py's.
"""

from __future__ import annotations

import asyncio

import pytest

from archangel.bus.bus import Bus
from archangel.bus.states import State
from archangel.bus.timers import every, next_deadline
from archangel.errors import InvalidArgument
from tests.conftest import VirtualClockLoop
from tests.test_queue import cancelled_inside

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


async def test_a_timer_whose_callback_cannot_be_called_is_refused_when_made() -> None:
    from archangel import NotCallable

    bus = Bus()
    with pytest.raises(
        NotCallable, match=r"a timer every 0.5 s: its callback must be callable, got 'print'"
    ):
        bus.every(0.5, "print")  # type: ignore[arg-type]
    with pytest.raises(NotCallable):
        every(asyncio.get_running_loop(), 1.0, None, ())  # type: ignore[arg-type]
    bus.close()
