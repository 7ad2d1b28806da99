"""The bus's event queue: pyzenkit's ``EventQueueManager`` on the loop's clock.

:class:`EventQueue` is the data structure behind :meth:`archangel.bus.Bus.schedule`:
pure, it is told the time instead of reading a clock, so tests drive it without a
loop. :class:`Scheduler` runs one on a loop, for the bus, and hands out a
:class:`ScheduledEvent` for each message, to cancel it (deadbeat's ``dequeue``).

What this module is not: a timer (:mod:`archangel.bus.timers` has the one
periodic call) or a scheduler of its own. Nothing here sleeps or spawns
threads; every deadline is in ``loop.time()`` units. The wall clock is read
only to refuse a deadline that is a wall-clock reading (see :meth:`Scheduler.add`).
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

from ..errors import InvalidArgument

__all__ = ["EventQueue", "ScheduledEvent", "Scheduler"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class EventQueue(Generic[T]):
    """Sequential events in a deque, timed events in a heap (pyzenkit's ``EventQueueManager``).

    * :meth:`push` appends to the sequential queue (FIFO);
    * :meth:`push_front` puts an event before every queued one (so several of
      them come out last-pushed first, like pyzenkit's ``schedule_next``);
    * :meth:`push_at` files an event under a deadline.

    :meth:`pop_due` hands out a timed event whose deadline has come before any
    sequential one. Timed events with the same deadline come out in the order
    they were pushed: a sequence number breaks the tie, so the events
    themselves are never compared.

    Events must not be None (``pop_due`` returns None for "nothing is due").
    """

    __slots__ = ("_counter", "_sequential", "_timed")

    def __init__(self) -> None:
        self._sequential: deque[T] = deque()
        self._timed: list[tuple[float, int, T]] = []
        self._counter = itertools.count()

    def push(self, event: T) -> None:
        """Append ``event`` to the end of the sequential queue."""
        self._sequential.append(event)

    def push_front(self, event: T) -> None:
        """Put ``event`` at the front of the sequential queue."""
        self._sequential.appendleft(event)

    def push_at(self, deadline: float, event: T) -> None:
        """File ``event`` to become due at ``deadline`` (in the caller's clock)."""
        heapq.heappush(self._timed, (deadline, next(self._counter), event))

    def pop_due(self, now: float) -> T | None:
        """Take the next event that is due at ``now``, or None if none is.

        A timed event whose deadline is ``<= now`` beats the sequential queue.
        """
        timed = self._timed
        if timed and timed[0][0] <= now:
            return heapq.heappop(timed)[2]
        if self._sequential:
            return self._sequential.popleft()
        return None

    def next_deadline(self) -> float | None:
        """The earliest deadline among the timed events, or None if there are none."""
        return self._timed[0][0] if self._timed else None

    def next_due(self, now: float) -> float | None:
        """When the next event is due (pyzenkit's ``when``), None if the queue is empty.

        A sequential event is due at once (``now``); a timed one at its
        deadline, which is earlier than ``now`` when it is overdue.
        """
        deadline = self.next_deadline()
        if self._sequential:
            return now if deadline is None else min(now, deadline)
        return deadline

    def remove(self, event: T) -> bool:
        """Take ``event`` (found by identity) out of the queue; False if it is not in it.

        The other events keep their order. It costs a walk through the queue
        (``O(n)``): the queue is for events that mostly get sent, not for
        thousands of timeouts that mostly get cancelled (``loop.call_later``
        is for those).
        """
        for index, queued in enumerate(self._sequential):
            if queued is event:
                del self._sequential[index]
                return True
        timed = self._timed
        for index, entry in enumerate(timed):
            if entry[2] is event:
                last = timed.pop()
                if index < len(timed):
                    timed[index] = last
                    heapq.heapify(timed)
                return True
        return False

    def clear(self) -> int:
        """Drop every event; return how many there were."""
        count = len(self)
        self._sequential.clear()
        self._timed.clear()
        return count

    def __len__(self) -> int:
        return len(self._sequential) + len(self._timed)

    def __iter__(self) -> Iterator[T]:
        """The events in the queue: the sequential ones in order, then the timed ones unsorted."""
        yield from self._sequential
        for _, _, event in self._timed:
            yield event

    def __repr__(self) -> str:
        return f"<EventQueue {len(self._sequential)} queued, {len(self._timed)} timed>"


class _Status(enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    CANCELLED = "cancelled"


class ScheduledEvent:
    """A message queued by :meth:`archangel.bus.Bus.schedule`; cancel it before it is sent.

    What :meth:`~archangel.bus.Bus.schedule` returns: :meth:`cancel` takes
    the message out of the queue (deadbeat's ``Escapement.dequeue``). Do not
    create one directly.
    """

    __slots__ = ("_scheduler", "_status", "args", "channel", "deadline", "kwargs", "piped")

    def __init__(
        self,
        scheduler: Scheduler,
        channel: Hashable,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deadline: float | None,
        piped: bool,
    ) -> None:
        self._scheduler = scheduler
        self._status = _Status.PENDING
        #: The channel the message goes to.
        self.channel = channel
        #: The positional arguments of the publish (for a piped one, the value first).
        self.args = args
        #: The keyword arguments of the publish.
        self.kwargs = kwargs
        #: The loop time it is due at, or None for a queued (untimed) message.
        self.deadline = deadline
        #: True when it goes through :meth:`~archangel.bus.channels.Channels.pipe`.
        self.piped = piped

    @property
    def pending(self) -> bool:
        """True while the message waits in the queue (not sent, not cancelled)."""
        return self._status is _Status.PENDING

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` took the message out of the queue."""
        return self._status is _Status.CANCELLED

    def cancel(self) -> bool:
        """Take the message out of the queue, so it is never sent.

        Returns:
            True if it was taken out; False when it was sent already (or is
            being sent: a publish under way is not interrupted), was cancelled
            already, or the queue was closed (:meth:`archangel.bus.Bus.close`).
        """
        if self._status is not _Status.PENDING:
            return False
        if not self._scheduler.remove(self):
            return False
        self._status = _Status.CANCELLED
        return True

    def __repr__(self) -> str:
        how = "pipe" if self.piped else "publish"
        when = "queued" if self.deadline is None else f"at {self.deadline:.3f}"
        return f"<ScheduledEvent {how} {self.channel!r} {when} [{self._status.value}]>"


class Scheduler:
    """Runs an :class:`EventQueue` of messages on a loop, for :meth:`archangel.bus.Bus.schedule`.

    One task drains the queue; it starts when a message is added and ends
    when the queue is empty. It sends one message at a time, waiting for each
    to be handled, and yields to the loop between messages so a busy queue
    cannot starve I/O. A message that fails is logged and the queue goes on,
    also when a subscriber raises ``CancelledError`` itself; only :meth:`close`
    (or the loop's shutdown cancelling the task) stops the draining.

    Args:
        send: The coroutine function that delivers a message (``bus.publish``).
        owner: Named in log lines.
        pipe: The coroutine function that delivers a piped message
            (``bus.pipe``, pyzenkit's callback chain); without it, ``add(...,
            pipe=True)`` is refused.
    """

    __slots__ = ("_drainer", "_owner", "_pipe", "_send", "_wakeup", "queue")

    def __init__(
        self,
        send: Callable[..., Awaitable[Any]],
        owner: object,
        pipe: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self._send = send
        self._pipe = pipe
        self._owner = owner
        #: The messages waiting to be sent.
        self.queue: EventQueue[ScheduledEvent] = EventQueue()
        self._drainer: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        channel: Hashable,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        delay: float | None = None,
        at: float | None = None,
        first: bool = False,
        pipe: bool = False,
    ) -> ScheduledEvent:
        """Queue a message; the arguments are those of :meth:`archangel.bus.Bus.schedule`.

        Returns:
            The message's :class:`ScheduledEvent`, to cancel it.

        Raises:
            InvalidArgument: Both ``delay`` and ``at``, or ``first`` with either;
                a ``delay`` or ``at`` that is not a finite number; an ``at`` that
                is a wall-clock reading (nearer ``time.time()`` than ``loop.time()``);
                ``pipe=True`` with no value to pipe, or on a scheduler without one.
        """
        if delay is not None and at is not None:
            raise InvalidArgument("schedule() takes delay or at, not both")
        if first and (delay is not None or at is not None):
            raise InvalidArgument("schedule(first=True) is for queued events, not timed ones")
        if delay is not None and not _finite(delay):
            raise InvalidArgument(f"schedule(delay={delay!r}): delay must be a finite number")
        if pipe and self._pipe is None:
            raise InvalidArgument(f"{self._owner!r} cannot pipe scheduled messages")
        if pipe and not args:
            raise InvalidArgument(
                f"schedule({channel!r}, pipe=True) needs the value to pass down the chain, "
                "as its first argument"
            )
        if at is not None:
            _check_loop_time(loop, at, "schedule(at=...)")
        deadline = loop.time() + delay if delay is not None else at
        event = ScheduledEvent(self, channel, args, kwargs, deadline, pipe)
        if deadline is not None:
            self.queue.push_at(deadline, event)
        elif first:
            self.queue.push_front(event)
        else:
            self.queue.push(event)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(loop))
        else:
            self._wake()  # something new may be due before the alarm
        return event

    def remove(self, event: ScheduledEvent) -> bool:
        """Take ``event`` out of the queue (for :meth:`ScheduledEvent.cancel`)."""
        if not self.queue.remove(event):
            return False
        self._wake()  # the alarm may be for it; an empty queue ends the drainer
        return True

    def next_due(self, loop: asyncio.AbstractEventLoop | None) -> float | None:
        """When the next message is due, on ``loop``'s clock (see :meth:`EventQueue.next_due`)."""
        if loop is None or not self.queue:
            return None
        return self.queue.next_due(loop.time())

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self.queue
        while queue:
            event = queue.pop_due(loop.time())
            if event is None:  # only timed events are left, and none is due yet
                self._wakeup = wakeup = loop.create_future()
                deadline = queue.next_deadline()
                assert deadline is not None
                alarm = loop.call_at(deadline, _wake, wakeup)
                try:
                    await wakeup
                finally:
                    alarm.cancel()
                    if self._wakeup is wakeup:
                        self._wakeup = None
                continue
            event._status = _Status.SENT
            send = self._pipe if event.piped and self._pipe is not None else self._send
            channel = event.channel
            try:
                await send(channel, *event.args, **event.kwargs)
            except Exception:
                logger.exception("%r: scheduled message to %r failed", self._owner, channel)
            except asyncio.CancelledError:
                if _cancel_requested():  # close(), or the loop shutting down
                    raise
                # A subscriber's own CancelledError (a cancelled operation it
                # awaited): a failure of that message, not a stop of the queue.
                logger.exception("%r: scheduled message to %r was cancelled", self._owner, channel)
            await asyncio.sleep(0)

    def close(self) -> int:
        """Drop the queued messages and stop the draining task; return how many were dropped.

        The dropped messages count as cancelled (:attr:`ScheduledEvent.cancelled`).
        """
        for event in self.queue:
            event._status = _Status.CANCELLED
        dropped = self.queue.clear()
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done() and not drainer.get_loop().is_closed():
            drainer.cancel()
        return dropped


#: Clocks further apart than this (seconds) tell a wall-clock reading from a loop time.
_CLOCKS_APART = 86_400.0


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_loop_time(loop: asyncio.AbstractEventLoop, when: float, what: str) -> None:
    """Refuse ``when`` unless it can be a deadline on ``loop``'s clock.

    ``loop.time()`` counts from an arbitrary start (the boot of the machine,
    for both asyncio and uvloop), not from 1970 as ``time.time()`` does, so a
    wall-clock reading given as a loop time would fall decades after now and
    never come. A value nearer to the wall clock's now than to the loop's is
    taken for one and refused, with the conversion in the message. When the
    two clocks are within a day of each other (a loop driven by the wall
    clock) they cannot be told apart, and need not be.

    Raises:
        InvalidArgument: ``when`` is not a finite number, or is a wall-clock reading.
    """
    if not _finite(when):
        raise InvalidArgument(f"{what}: {when!r} is not a finite loop time")
    now, wall = loop.time(), time.time()
    if abs(wall - now) > _CLOCKS_APART and abs(when - wall) < abs(when - now):
        raise InvalidArgument(
            f"{what}: {when!r} is a wall-clock time (time.time() is {wall:.3f}), but deadlines "
            f"are on the loop's clock (loop.time() is {now:.3f}): pass "
            "loop.time() + (when - time.time()), or delay=when - time.time()"
        )


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _cancel_requested() -> bool:
    """Whether the running task was asked to stop (``task.cancel()``).

    Tells that apart from a ``CancelledError`` that the awaited code raised on
    its own (an operation it awaited was cancelled), which the task survives.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
