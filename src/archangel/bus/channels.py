"""Channels: prioritised subscribers, and the ways to send them a message.

A :class:`Channels` keeps, for each channel (any hashable), its subscribers in
the order they run, and delivers messages to them: :meth:`~Channels.publish`
(awaited), :meth:`~Channels.emit` (in the background, from any thread),
:meth:`~Channels.ask` (the first answer), :meth:`~Channels.pipe` (a callback
chain), and the one-shot latches :meth:`~Channels.when` and
:meth:`~Channels.transpire`. It is the messaging half of
:class:`archangel.bus.Bus`, which adds the lifecycle, the event queue and the
timers. What it is not: no state machine, no I/O, no signal handlers, no
threads of its own.

Threading: :meth:`Channels.emit` may be called from any thread; everything
else belongs to the loop the channels run on.

The hot path is :meth:`Channels.publish`: each channel's subscribers are
sorted when they subscribe, not when a message is published. A subscriber's
result is awaited when it is awaitable (coroutine functions, and plain
functions that return a coroutine, both work); once a publish has seen every
subscriber of a channel return a plain value, later publishes run them in a
plain loop that checks nothing, creates no task or coroutine per subscriber
and never suspends. The channel learns again when its subscribers change. A
channel nobody subscribed to costs two dictionary operations;
:meth:`Channels.has_subscribers` lets a caller skip building the message at
all. Each publish adds one to its channel's count (:attr:`Channels.published`,
which ``/metrics`` reads): one dictionary update, about 50 ns of the 0.3 us a
publish to one plain subscriber costs (``benchmarks/bus.py``).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import itertools
import logging
import math
import numbers
import os
from collections.abc import Awaitable, Callable, Hashable, Sequence
from types import CoroutineType
from typing import Any, Final

from ..errors import ChannelFailures, InvalidArgument, NotCallable

__all__ = ["DEADLINE_GRACE", "DEFAULT_PRIORITY", "STOP", "Callback", "Channels"]

logger = logging.getLogger(__name__)


#: The type of a subscriber, any callable (an awaitable result is awaited).
Callback = Callable[..., Any]

#: The priority of a subscriber that does not ask for one. Lower runs first.
DEFAULT_PRIORITY: Final = 50

#: Seconds an awaitable subscriber of a publish with a deadline always gets: from its
#: start, even past the deadline (so a step that begins late can still do its work,
#: such as killing what is left), and from its cancellation to its end, before it is
#: left behind.
DEADLINE_GRACE: Final = 1.0


class _Stop(enum.Enum):
    STOP = "STOP"

    def __repr__(self) -> str:
        return "archangel.STOP"


#: Returned by a :meth:`~archangel.bus.channels.Channels.pipe` subscriber, ends the chain.
STOP: Final = _Stop.STOP


def _failures(
    channel: Hashable, callbacks: Sequence[Callback], failures: list[Exception]
) -> ChannelFailures:
    message = f"{len(failures)} of {len(callbacks)} subscribers of {channel!r} failed"
    return ChannelFailures(message, failures, channel)


def _check_priority(channel: Hashable, what: str, priority: object) -> None:
    # Checked when subscribing: a priority that cannot be ordered (None, a string)
    # would otherwise be stored and break the sort of every later subscribe.
    if (
        isinstance(priority, bool)
        or not isinstance(priority, numbers.Real)
        or math.isnan(priority)
    ):
        raise InvalidArgument(
            f"cannot subscribe {what} to {channel!r}: priority must be a number "
            f"(lower runs first; {DEFAULT_PRIORITY} when not given), not {priority!r}"
        )


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: the innermost frame of its await chain outside asyncio.

    Frames inside asyncio itself (``Event.wait``, ``sleep``) tell a reader of
    the log nothing, so the deepest frame of the caller's code is named, and
    what it awaits when that is not a coroutine (a future, say).
    """
    where = None
    awaited: Any = task.get_coro()
    for _ in range(64):  # await chains are short; bound it anyway
        frame = (
            getattr(awaited, "cr_frame", None)
            or getattr(awaited, "gi_frame", None)
            or getattr(awaited, "ag_frame", None)
        )
        if frame is None:
            break
        code = frame.f_code
        if not code.co_filename.startswith(_ASYNCIO_DIR) and code is not _awaited.__code__:
            where = f"in {code.co_qualname} at {code.co_filename}:{frame.f_lineno}"
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
            or getattr(awaited, "ag_await", None)
        )
    on = None
    if awaited is not None:  # the chain ends at something with no frame
        name = type(awaited).__name__
        on = (
            "on a future"
            if name == "FutureIter" or isinstance(awaited, asyncio.Future)
            else f"on {name}"
        )
    return ", ".join(part for part in (where, on) if part) or "before its first step"


async def _call_one(
    channel: Hashable, callback: Callback, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call one subscriber, await it if need be, and wrap its failure for the caller."""
    try:
        result = callback(*args, **kwargs)
        return (await result) if inspect.isawaitable(result) else result
    except Exception as exc:
        message = f"subscriber {callback!r} of {channel!r} failed"
        raise ChannelFailures(message, [exc], channel) from None


class Channels:
    """Channels with prioritised subscribers, and the messages sent through them.

    A channel is any hashable: a string, an enum member, a state. Most code
    uses this through :class:`archangel.bus.Bus`, which extends it; on its
    own it serves where no lifecycle is wanted. It binds to the running loop
    whenever :meth:`emit` runs in one, or a latch callback returns something
    to await.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        # channel -> {callback: (priority, order)}; channel -> the run order; and the
        # run order again for the channels proven to return plain values (the hot path)
        self._subscriptions: dict[Hashable, dict[Callback, tuple[float, int]]] = {}
        self._plans: dict[Hashable, tuple[Callback, ...]] = {}
        self._proven: dict[Hashable, tuple[Callback, ...]] = {}
        self._order = itertools.count()
        self._happened: set[Hashable] = set()
        self._pending: dict[Hashable, list[tuple[Callback, tuple[Any, ...], dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        # The task running an awaitable subscriber of a publish with a deadline.
        self._bounded: asyncio.Task[Any] | None = None
        # channel -> messages published on it (one ``+= 1`` per publish, for /metrics).
        self._published: collections.defaultdict[Hashable, int] = collections.defaultdict(int)

    # -- subscribing ---------------------------------------------------------------------

    def subscribe(
        self, channel: Hashable, callback: Callback, priority: float = DEFAULT_PRIORITY
    ) -> None:
        """Run ``callback`` on every message to ``channel``.

        Lower priorities run first; equal priorities run in subscription order.
        A callback already subscribed to the channel is not added twice: its
        priority is updated and it keeps its place among equals.

        Raises:
            NotCallable: ``callback`` is not callable (a ``TypeError`` too).
            TypeError: ``callback`` is not hashable.
            InvalidArgument: ``priority`` is not a number (None, a string, NaN or a
                bool); nothing is subscribed.
        """
        if not callable(callback):
            raise NotCallable(f"cannot subscribe {callback!r} to {channel!r}: not callable")
        _check_priority(channel, repr(callback), priority)
        subscriptions = self._subscriptions.setdefault(channel, {})
        old = subscriptions.get(callback)
        subscriptions[callback] = (priority, old[1] if old else next(self._order))
        self._plan(channel)

    def unsubscribe(self, channel: Hashable, callback: Callback) -> bool:
        """Stop running ``callback`` for ``channel``; False if it was not subscribed.

        A publish already under way still calls it.
        """
        if self._subscriptions.get(channel, {}).pop(callback, None) is None:
            return False
        self._plan(channel)
        return True

    def on(
        self, channel: Hashable, priority: float = DEFAULT_PRIORITY
    ) -> Callable[[Callback], Callback]:
        """Decorator form of :meth:`subscribe`; returns the function unchanged.

        Raises:
            InvalidArgument: ``priority`` is not a number, raised here rather than
                when the decorator is applied.
        """
        _check_priority(channel, "a decorated function", priority)

        def decorate(callback: Callback) -> Callback:
            self.subscribe(channel, callback, priority)
            return callback

        return decorate

    def clear(self) -> int:
        """Remove every subscriber of every channel (magicbus's ``clear``); return how many.

        A publish already under way still calls the subscribers it started
        with. Latches (:meth:`when`) are not subscribers: they stay.
        """
        count = sum(map(len, self._subscriptions.values()))
        self._subscriptions.clear()
        self._plans.clear()
        self._proven.clear()
        return count

    def has_subscribers(self, channel: Hashable) -> bool:
        """Whether anything is subscribed to ``channel``."""
        return channel in self._plans

    def subscribers(self, channel: Hashable) -> tuple[Callback, ...]:
        """The subscribers of ``channel``, in the order a publish runs them."""
        return self._plans.get(channel, ())

    @property
    def channels(self) -> tuple[Hashable, ...]:
        """The channels that have subscribers."""
        return tuple(self._plans)

    @property
    def published(self) -> dict[Hashable, int]:
        """How many messages were published on each channel, subscribed to or not (a copy).

        Every :meth:`publish` counts, hence every :meth:`emit` once it runs and
        every state a :class:`~archangel.bus.Bus` enters; :meth:`ask` and
        :meth:`pipe` do not. Safe to read from another thread (the web's
        ``/metrics`` does).
        """
        return dict(self._published)

    def _plan(self, channel: Hashable) -> None:
        self._proven.pop(channel, None)  # until the next publish proves it again
        subscriptions = self._subscriptions.get(channel)
        if not subscriptions:
            self._subscriptions.pop(channel, None)
            self._plans.pop(channel, None)
            return
        self._plans[channel] = tuple(sorted(subscriptions, key=subscriptions.__getitem__))

    # -- messages ------------------------------------------------------------------------

    async def publish(self, channel: Hashable, /, *args: Any, **kwargs: Any) -> list[Any]:
        """Call every subscriber of ``channel`` in order; return their results in that order.

        Awaitable results are awaited one after the other, never side by side
        (a channel whose subscribers all returned plain values once is taken to
        keep doing so; see the module's notes). A subscriber that raises does
        not stop the others.

        Raises:
            ChannelFailures: One or more subscribers raised; raised after all ran.
                ``asyncio.CancelledError``, ``KeyboardInterrupt`` and
                ``SystemExit`` are not collected: they propagate at once.
        """
        self._published[channel] += 1
        results: list[Any] = []
        callbacks = self._proven.get(channel)
        if callbacks is not None:
            # The hot path: plain calls, with the usual zero or one argument passed
            # without unpacking (``results.append`` in full is the fastest form).
            try:
                if not kwargs:
                    if len(args) == 1:
                        arg = args[0]
                        for callback in callbacks:
                            results.append(callback(arg))
                        return results
                    if not args:
                        for callback in callbacks:
                            results.append(callback())
                        return results
                for callback in callbacks:
                    results.append(callback(*args, **kwargs))
                return results
            except Exception as exc:
                # Results are appended only on success: the subscriber that raised is
                # callbacks[len(results)]; the ones after it still run, one by one.
                failures = [exc]
                for callback in callbacks[len(results) + 1 :]:
                    try:
                        results.append(callback(*args, **kwargs))
                    except Exception as later:
                        failures.append(later)
                raise _failures(channel, callbacks, failures) from None
        # The careful path: await what is awaitable. When every subscriber returned a
        # plain value, the channel is proven plain and later publishes take the hot path.
        callbacks = self._plans.get(channel)
        if callbacks is None:
            return results
        failures = []
        proven = True
        for callback in callbacks:
            try:
                result = callback(*args, **kwargs)
                if type(result) is CoroutineType or inspect.isawaitable(result):
                    proven = False
                    result = await result
                results.append(result)
            except Exception as exc:
                proven = False
                failures.append(exc)
        if failures:
            raise _failures(channel, callbacks, failures)
        if proven and self._plans.get(channel) is callbacks:
            self._proven[channel] = callbacks
        return results

    async def _publish_by(
        self, channel: Hashable, args: tuple[Any, ...], deadline: float
    ) -> tuple[list[Any], int]:
        """:meth:`publish` with a deadline (a ``loop.time()``); results and how many were cut.

        An awaitable result runs as a task of its own, so that it can be
        cancelled at the deadline and left behind when it ignores that; the
        result of a subscriber cut short is None, and it is not a failure.
        Plain subscribers run as in :meth:`publish`: nothing interrupts a plain
        call, and a channel proven plain takes the hot path.
        """
        time = asyncio.get_running_loop().time
        if channel in self._proven:
            began = time()
            results = await self.publish(channel, *args)
            return results, self._overran(channel, "its plain subscribers", began, deadline)
        self._published[channel] += 1
        callbacks = self._plans.get(channel)
        if callbacks is None:
            return [], 0
        results = []
        failures: list[Exception] = []
        cut = 0
        for callback in callbacks:
            try:
                began = time()
                result = callback(*args)
                if inspect.isawaitable(result):
                    result, ended = await self._await_by(channel, callback, result, deadline)
                    cut += not ended
                else:
                    cut += self._overran(channel, f"subscriber {callback!r}", began, deadline)
                results.append(result)
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise _failures(channel, callbacks, failures)
        return results, cut

    def _overran(self, channel: Hashable, who: str, began: float, deadline: float) -> int:
        """1 (and a warning) if plain calls begun before ``deadline`` ended after it, else 0.

        Nothing interrupts a plain call: the bound is only reported, so the
        step counts as cut short (an App's stop is then forced: status 3).
        """
        ended = asyncio.get_running_loop().time()
        if not began <= deadline < ended:
            return 0
        logger.warning(
            "%r: %s of %r ran %.1f s, past the deadline by %.1f s (a plain call cannot be "
            "interrupted: make it async, or quicker)",
            self,
            who,
            channel,
            ended - began,
            ended - deadline,
        )
        return 1

    async def _await_by(
        self, channel: Hashable, callback: Callback, awaitable: Awaitable[Any], deadline: float
    ) -> tuple[Any, bool]:
        """Await one subscriber's result until ``deadline``; (its result, whether it ended).

        A subscriber that starts less than :data:`DEADLINE_GRACE` before the
        deadline, or after it, gets that long from its start.
        """
        loop = asyncio.get_running_loop()
        name = f"subscriber {callback!r} of {channel!r}"
        task = loop.create_task(_awaited(awaitable), name=name)
        self._bounded = task
        try:
            cut_at = max(deadline, loop.time() + DEADLINE_GRACE)
            await asyncio.wait((task,), timeout=cut_at - loop.time())
            if task.done():
                return task.result(), True
            where = _awaiting(task)
            task.cancel()
            logger.error(
                "%r: subscriber %r of %r still running at the deadline, awaiting %s: cancelled",
                self,
                callback,
                channel,
                where,
            )
            await asyncio.wait((task,), timeout=DEADLINE_GRACE)
            if not task.done():
                logger.error(
                    "%r: subscriber %r of %r did not end within %.1f s of being cancelled: "
                    "left behind",
                    self,
                    callback,
                    channel,
                    DEADLINE_GRACE,
                )
                self._watch(task, channel, "subscriber left behind on")
            elif not task.cancelled() and (exc := task.exception()) is not None:
                logger.error(
                    "%r: subscriber %r of %r raised when cancelled",
                    self,
                    callback,
                    channel,
                    exc_info=exc,
                )
            return None, False
        except asyncio.CancelledError:
            task.cancel()  # the publish itself was cancelled: so is the subscriber
            raise
        finally:
            self._bounded = None

    def emit(
        self, channel: Hashable, /, *args: Any, **kwargs: Any
    ) -> asyncio.Task[list[Any]] | asyncio.Handle:
        """Publish without waiting: for synchronous code, signal handlers and other threads.

        In the channels' loop (or any loop, if they have none yet) this
        creates the publishing task and returns it; from another thread it
        hands the work to the channels' loop and returns the ``Handle``.
        Failures are logged at ERROR level, never lost and never raised.

        Raises:
            RuntimeError: There is no running loop and the channels have never run on one.
        """
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop if self._loop is not None and not self._loop.is_closed() else running
        if loop is None:
            raise RuntimeError(f"{self!r} cannot emit {channel!r}: it has no event loop yet")
        self._loop = loop
        if loop is running:
            return self._spawn(channel, args, kwargs)
        return loop.call_soon_threadsafe(self._spawn, channel, args, kwargs)

    def _spawn(
        self, channel: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Task[list[Any]]:
        task = asyncio.get_running_loop().create_task(self.publish(channel, *args, **kwargs))
        self._watch(task, channel, "emitted message to")
        return task

    def _watch(self, task: asyncio.Future[Any], about: Hashable, what: str) -> None:
        """Keep a background task alive until it is done, then log its failure, if any."""

        def done(task: asyncio.Future[Any]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                logger.error("%r: %s %r failed", self, what, about, exc_info=exc)

        self._tasks.add(task)
        task.add_done_callback(done)

    async def ask(self, channel: Hashable, /, *args: Any, **kwargs: Any) -> Any:
        """Ask the subscribers of ``channel`` in order; return the first answer that is not None.

        Subscribers after the one that answered are not called. Returns None
        when nobody answers.

        Raises:
            ChannelFailures: A subscriber raised; the asking stops there.
        """
        for callback in self.subscribers(channel):
            answer = await _call_one(channel, callback, args, kwargs)
            if answer is not None:
                return answer
        return None

    async def pipe(self, channel: Hashable, value: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Pass ``value`` through the subscribers of ``channel`` (pyzenkit's callback chain).

        Each subscriber is called as ``callback(value, *args, **kwargs)`` and
        its result, whatever it is, None included, is the next ``value``. A
        subscriber that returns :data:`STOP` ends the chain.

        Returns:
            The result of the last subscriber, or the value that was given to
            the one returning ``STOP`` (``value`` itself when the channel has no
            subscribers).

        Raises:
            ChannelFailures: A subscriber raised; the chain stops there.
        """
        for callback in self.subscribers(channel):
            result = await _call_one(channel, callback, (value, *args), kwargs)
            if result is STOP:
                break
            value = result
        return value

    # -- latches -------------------------------------------------------------------------

    def when(self, event: Hashable, callback: Callback, /, *args: Any, **kwargs: Any) -> None:
        """Call ``callback(*args, **kwargs)`` once ``event`` has transpired (rel's ``when``).

        If it has already, the call happens now; an exception then propagates.
        A coroutine function's coroutine becomes a task on the running loop.
        """
        if event in self._happened:
            self._call(event, callback, args, kwargs)
        else:
            self._pending.setdefault(event, []).append((callback, args, kwargs))

    def transpire(self, event: Hashable) -> bool:
        """Mark ``event`` as happened and call its waiting callbacks, in the order they came.

        Returns:
            True, or False if the event had already transpired (then nothing happens).

        Raises:
            ChannelFailures: Some callbacks raised (after all were called); the
                event still counts as transpired.
        """
        if event in self._happened:
            return False
        self._happened.add(event)
        waiting = self._pending.pop(event, [])
        failures: list[Exception] = []
        for callback, args, kwargs in waiting:
            try:
                self._call(event, callback, args, kwargs)
            except Exception as exc:
                failures.append(exc)
        if failures:
            message = f"{len(failures)} of {len(waiting)} callbacks waiting for {event!r} failed"
            raise ChannelFailures(message, failures, event)
        return True

    def _call(
        self, event: Hashable, callback: Callback, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        result = callback(*args, **kwargs)
        if inspect.isawaitable(result):
            try:
                loop = self._bind()
            except RuntimeError:
                if inspect.iscoroutine(result):
                    result.close()
                raise RuntimeError(
                    f"{self!r}: {callback!r} for {event!r} needs a running loop to be awaited"
                ) from None
            self._watch(asyncio.ensure_future(result, loop=loop), event, "callback waiting for")

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = loop = asyncio.get_running_loop()
        return loop

    def __repr__(self) -> str:
        count = sum(map(len, self._plans.values()))
        return f"<{type(self).__name__} {count} subscribers on {len(self._plans)} channels>"
