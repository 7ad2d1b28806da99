"""Time on the loop's clock: rel's repeating timers.

:class:`Timer` (made by :func:`every` or :meth:`archangel.bus.Bus.every`) calls a
function at a fixed rate through ``loop.call_at``; it is the one periodic call of
archangel (the ``every`` supply, the polling watcher and the systemd watchdog are
built on it), and :func:`next_deadline` its one rule for missed ticks: skip them,
never burst. The bus's event queue is :mod:`archangel.bus.queue`.

What this module is not: a scheduler of its own. Nothing here sleeps or spawns
threads; every deadline is in ``loop.time()`` units.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import InvalidArgument, check_callable
from .queue import _cancel_requested, _finite

__all__ = ["Timer", "every", "next_deadline"]

logger = logging.getLogger(__name__)


class Timer:
    """A call repeated every ``interval`` seconds while it returns something truthy (rel).

    Do not create one directly: use :func:`every` or :meth:`archangel.bus.Bus.every`.
    It is archangel's one periodic call: :func:`archangel.pipes.every`, the
    polling file watcher and :class:`archangel.service.systemd.Watchdog` run on
    it, so they share the rules below.

    * The first call comes one interval after the timer is made, or ``delay``
      seconds after (0: at the loop's next iteration, mode's ``exec_first``).
    * Deadlines are measured from the schedule, not from when a call ends:
      the next deadline is the previous deadline plus the interval, so the
      timer does not drift; every deadline is ``first + k * interval``.
    * **Missed ticks are skipped, never run in a burst.** A tick whose
      deadline the loop was blocked past runs once, late (its
      :attr:`deadline` still says when it was due); when it is over, every
      deadline that has passed meanwhile is skipped (counted in
      :attr:`missed`) and the timer goes on at the next deadline of its grid,
      which may come sooner than a whole interval after the late tick. The
      same holds for a call that takes longer than the interval.

      (Before this was the one mechanism, the polling watcher and the
      watchdog re-phased instead: after a late tick they went on one whole
      interval after it, off the grid. Nothing relied on that: a poll or a
      ping that comes early after a stall only finds changes sooner and
      keeps systemd further from its timeout, and both never burst either way.)
    * The callback may be a coroutine function; its call is awaited before
      the timer re-arms, so calls never overlap.
    * A falsy return value ends the timer. An exception is logged and the timer
      goes on: a background timer has no caller to raise to, and one bad tick
      (a full disk, say) should not silence it for good. So is a
      ``CancelledError`` the callback raises itself (an operation it awaited
      was cancelled); only :meth:`cancel` (or the loop's shutdown cancelling
      the call in progress) stops the timer. Return False or call
      :meth:`cancel` to stop it.
    * :meth:`rearm` starts it again, with a new first delay, whether it was
      cancelled, ended or is still going (rel's ``timeout(...).add(delay)``).
    """

    __slots__ = (
        "__weakref__",
        "_args",
        "_callback",
        "_cancelled",
        "_deadline",
        "_deferred",
        "_generation",
        "_handle",
        "_loop",
        "_running",
        "_task",
        "interval",
        "missed",
        "ticks",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        delay: float | None = None,
    ) -> None:
        if not (_finite(interval) and interval > 0):
            raise InvalidArgument(f"a timer's interval must be positive, not {interval!r}")
        _check_delay(delay, "a timer's first delay")
        check_callable(callback, f"a timer every {interval!r} s: its callback")
        self._loop = loop
        #: Seconds between deadlines.
        self.interval = float(interval)
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._task: asyncio.Task[None] | None = None
        # A call is in progress (sync, or the awaited one); re-armed from inside
        # it (arm when it ends); bumped by every cancel() and rearm(), so a call
        # that ends after either knows that the timer is no longer its own.
        self._running = False
        self._deferred = False
        self._generation = 0
        #: How many times the callback was called.
        self.ticks = 0
        #: How many deadlines were skipped because the loop was late.
        self.missed = 0
        first = self.interval if delay is None else float(delay)
        self._deadline: float | None = loop.time() + first
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._deadline, self._fire)

    @property
    def deadline(self) -> float | None:
        """The loop time of the next tick (of the current one while it runs), or None when over."""
        return self._deadline

    @property
    def active(self) -> bool:
        """True until the callback returns something falsy or the timer is cancelled."""
        return self._deadline is not None

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (and :meth:`rearm` was not, since)."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the timer; a call in progress (an awaited coroutine) is cancelled too.

        Idempotent. Calling it from inside the callback stops the timer after
        that call. :meth:`rearm` starts it again.
        """
        if self._cancelled:
            return
        self._cancelled = True
        self._generation += 1
        self._deferred = False
        self._deadline = None
        self._stop_pending()

    def rearm(self, delay: float | None = None) -> None:
        """Arm the timer again: the next call ``delay`` seconds from now (rel's ``add``).

        Works on a cancelled timer, on one whose callback ended it (a falsy
        return), and on one still going, whose next deadline moves. The grid
        starts anew: the deadlines are ``now + delay + k * interval``.
        :attr:`ticks` and :attr:`missed` go on counting. A call in progress
        (an awaited coroutine) is cancelled, as by :meth:`cancel`, so calls
        never overlap; called from inside the callback, the new deadline holds
        once the call is over, whatever the call returns.

        Args:
            delay: Seconds until the next call (0: the loop's next iteration);
                one interval when None.

        Raises:
            InvalidArgument: ``delay`` is negative or not a number; the timer's
                loop is closed.
        """
        _check_delay(delay, f"{self!r}: rearm() delay")
        loop = self._loop
        if loop.is_closed():
            raise InvalidArgument(f"{self!r} cannot be re-armed: its loop is closed")
        inside = self._running and (self._task is None or self._task is asyncio.current_task(loop))
        self._generation += 1
        self._cancelled = False
        self._deadline = loop.time() + (self.interval if delay is None else float(delay))
        if inside:
            self._deferred = True  # armed when the call in progress is over
            return
        self._stop_pending()
        self._handle = loop.call_at(self._deadline, self._fire)

    def _stop_pending(self) -> None:
        """Drop the armed call and cancel an awaited call in progress (not from itself)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        task, self._task = self._task, None
        if task is not None and not self._loop.is_closed():
            if task is asyncio.current_task(self._loop):
                self._task = task  # cancel() from inside the call: it ends by itself
            else:
                task.cancel()
                self._running = False

    def _fire(self) -> None:
        self._handle = None
        self.ticks += 1
        generation = self._generation
        self._running = True
        try:
            result = self._callback(*self._args)
        except (Exception, asyncio.CancelledError):  # nothing cancels a plain call
            logger.exception("%r: tick %d failed; the timer goes on", self, self.ticks)
            result = True
        if inspect.isawaitable(result):
            self._task = self._loop.create_task(self._finish(result, generation))
        else:
            self._running = False
            self._next(result, generation)

    async def _finish(self, awaitable: Awaitable[Any], generation: int) -> None:
        try:
            result = await awaitable
        except Exception:
            logger.exception("%r: tick %d failed; the timer goes on", self, self.ticks)
            result = True
        except asyncio.CancelledError:
            if _cancel_requested():  # cancel(), rearm(), or the loop shutting down
                raise
            logger.exception("%r: tick %d was cancelled; the timer goes on", self, self.ticks)
            result = True
        if self._task is asyncio.current_task():
            self._task = None
            self._running = False
        self._next(result, generation)

    def _next(self, keep_going: Any, generation: int) -> None:
        """After a call: arm the next one, unless the timer is over or no longer the call's."""
        if self._deferred and not self._running:  # rearm() from inside the call just over
            self._deferred = False
            assert self._deadline is not None
            self._handle = self._loop.call_at(self._deadline, self._fire)
            return
        if generation != self._generation or self._cancelled or self._deadline is None:
            return  # cancelled, or re-armed from outside while the call ran
        if not keep_going:
            self._deadline = None
            return
        deadline, skipped = next_deadline(self._deadline, self.interval, self._loop.time())
        self.missed += skipped
        self._deadline = deadline
        self._handle = self._loop.call_at(deadline, self._fire)

    def __repr__(self) -> str:
        name = getattr(self._callback, "__qualname__", None) or repr(self._callback)
        if self._cancelled:
            status = "cancelled"
        elif self._deadline is None:
            status = "done"
        else:
            status = "active"
        return f"<Timer every {self.interval:g}s {name} [{status}] ticks={self.ticks}>"


def _check_delay(delay: object, what: str) -> None:
    if delay is not None and not (_finite(delay) and delay >= 0):  # type: ignore[operator]
        raise InvalidArgument(f"{what} must be >= 0, not {delay!r}")


def next_deadline(previous: float, interval: float, now: float) -> tuple[float, int]:
    """The deadline after ``previous`` on its grid that is still to come at ``now``.

    The rule of :class:`Timer` for missed ticks, in one place: the next
    deadline is ``previous + interval``, unless that is not after ``now``;
    then the deadlines that passed are skipped and the first one after
    ``now`` is next.

    Returns:
        The deadline, and how many deadlines were skipped to reach it.
    """
    deadline = previous + interval
    if deadline > now:
        return deadline, 0
    skipped = int((now - deadline) // interval) + 1
    return deadline + skipped * interval, skipped


def every(
    loop: asyncio.AbstractEventLoop,
    interval: float,
    callback: Callable[..., Any],
    *args: Any,
    delay: float | None = None,
) -> Timer:
    """Call ``callback(*args)`` every ``interval`` seconds while it returns something truthy.

    Args:
        loop: The loop whose clock and ``call_at`` drive the timer.
        interval: Seconds between calls (positive); the first call is one
            interval from now, unless ``delay`` says otherwise.
        callback: A function or coroutine function; see :class:`Timer` for what
            its return value and its exceptions do.
        *args: Passed to every call.
        delay: Seconds until the first call (0: the loop's next iteration);
            the deadlines after it are ``delay + k * interval`` from now.

    Returns:
        The armed :class:`Timer`; ``timer.cancel()`` stops it.

    Raises:
        InvalidArgument: ``interval`` is not a positive number, or ``delay``
            is negative.
        NotCallable: ``callback`` is not callable.
    """
    return Timer(loop, interval, callback, args, delay=delay)
