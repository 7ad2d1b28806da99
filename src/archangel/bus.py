"""The bus: channels with prioritised subscribers, and the lifecycle they are told about.

A :class:`Bus` carries messages between the parts of an app (magicbus's bus,
rel's helpers and pyzenkit's event queue, on asyncio) and walks a state graph
(:mod:`archangel.states`), publishing each state it enters on the channel named
by that state. What it is not: it does no I/O, installs no signal handlers (the
app turns signals into :meth:`Bus.emit` calls) and starts no threads.

Threading: :meth:`Bus.emit` may be called from any thread; everything else
belongs to the loop the bus runs on. The bus binds to the running loop
whenever :meth:`~Bus.transition`, :meth:`~Bus.wait`, :meth:`~Bus.schedule`,
:meth:`~Bus.every` or :meth:`~Bus.emit` runs in one.

The hot path is :meth:`Bus.publish`: each channel's subscribers are sorted when
they subscribe, not when a message is published. A subscriber's result is
awaited when it is awaitable (coroutine functions, and plain functions that
return a coroutine, both work); once a publish has seen every subscriber of a
channel return a plain value, later publishes run them in a plain loop that
checks nothing, creates no task or coroutine per subscriber and never
suspends. The channel learns again when its subscribers change. A channel
nobody subscribed to costs one dictionary lookup; :meth:`Bus.has_subscribers`
lets a caller skip building the message at all.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import itertools
import logging
from collections.abc import Callable, Hashable, Sequence
from types import CoroutineType
from typing import Any, Final, Generic, TypeVar, cast, overload

from archangel.errors import ChannelFailures, InvalidArgument, InvalidTransition
from archangel.states import LIFECYCLE, State, StateGraph
from archangel.timers import Scheduler, Timer

__all__ = ["DEFAULT_PRIORITY", "STOP", "Bus", "Callback"]

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=Hashable)

#: The type of a subscriber, any callable (an awaitable result is awaited).
Callback = Callable[..., Any]

#: The priority of a subscriber that does not ask for one. Lower runs first.
DEFAULT_PRIORITY: Final = 50


class _Stop(enum.Enum):
    STOP = "STOP"

    def __repr__(self) -> str:
        return "archangel.STOP"


#: Returned by a :meth:`Bus.pipe` subscriber, ends the chain.
STOP: Final = _Stop.STOP


def _failures(
    channel: Hashable, callbacks: Sequence[Callback], failures: list[Exception]
) -> ChannelFailures:
    message = f"{len(failures)} of {len(callbacks)} subscribers of {channel!r} failed"
    return ChannelFailures(message, failures, channel)


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


class Bus(Generic[S]):
    """Channels with prioritised subscribers, and a state machine published through them.

    ``Bus()`` runs on the lifecycle graph (:data:`archangel.states.LIFECYCLE`)
    and starts in ``State.INITIAL``. A channel is any hashable; a state's
    channel is the state itself.

    Args:
        graph: The state graph to walk; the lifecycle by default.
        initial: The state to start in; ``graph.initial`` by default.
    """

    @overload
    def __init__(self: Bus[State], graph: None = None, initial: State | None = None) -> None: ...
    @overload
    def __init__(self, graph: StateGraph[S], initial: S | None = None) -> None: ...
    def __init__(self, graph: StateGraph[Any] | None = None, initial: Any = None) -> None:
        self._graph: StateGraph[S] = graph if graph is not None else cast(Any, LIFECYCLE)
        state = initial if initial is not None else self._graph.initial
        if state not in self._graph:
            raise InvalidTransition(f"initial state {state!r} is not in {self._graph!r}")
        self._state: S = cast(S, state)
        self._error: ChannelFailures | None = None
        self._lock = asyncio.Lock()
        self._walker: asyncio.Task[Any] | None = None
        self._waiters: list[tuple[frozenset[S], asyncio.Future[S]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # channel -> {callback: (priority, order)}; channel -> the run order; and the
        # run order again for the channels proven to return plain values (the hot path)
        self._subscriptions: dict[Hashable, dict[Callback, tuple[float, int]]] = {}
        self._plans: dict[Hashable, tuple[Callback, ...]] = {}
        self._proven: dict[Hashable, tuple[Callback, ...]] = {}
        self._order = itertools.count()
        self._happened: set[Hashable] = set()
        self._pending: dict[Hashable, list[tuple[Callback, tuple[Any, ...], dict[str, Any]]]] = {}
        self._scheduler = Scheduler(self.publish, self)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._timers: set[Timer] = set()

    # -- subscribing ---------------------------------------------------------------------

    def subscribe(
        self, channel: Hashable, callback: Callback, priority: float = DEFAULT_PRIORITY
    ) -> None:
        """Run ``callback`` on every message to ``channel``.

        Lower priorities run first; equal priorities run in subscription order.
        A callback already subscribed to the channel is not added twice: its
        priority is updated and it keeps its place among equals.

        Raises:
            TypeError: ``callback`` is not callable, or not hashable.
        """
        if not callable(callback):
            raise TypeError(f"cannot subscribe {callback!r} to {channel!r}: not callable")
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
        """Decorator form of :meth:`subscribe`; returns the function unchanged."""

        def decorate(callback: Callback) -> Callback:
            self.subscribe(channel, callback, priority)
            return callback

        return decorate

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

    def emit(
        self, channel: Hashable, /, *args: Any, **kwargs: Any
    ) -> asyncio.Task[list[Any]] | asyncio.Handle:
        """Publish without waiting: for synchronous code, signal handlers and other threads.

        In the bus's loop (or any loop, if the bus has none yet) this creates
        the publishing task and returns it; from another thread it hands the
        work to the bus's loop and returns the ``Handle``. Failures are logged
        at ERROR level, never lost and never raised.

        Raises:
            RuntimeError: There is no running loop and the bus has never run on one.
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

    # -- the state machine ---------------------------------------------------------------

    @property
    def state(self) -> S:
        """The current state, the last one entered (even while its subscribers run)."""
        return self._state

    @property
    def graph(self) -> StateGraph[S]:
        """The state graph this bus walks."""
        return self._graph

    @property
    def error(self) -> ChannelFailures | None:
        """What the last failed transition raised, or None if none failed."""
        return self._error

    async def transition(self, target: S) -> None:
        """Walk the shortest path to ``target``, publishing each state entered, in order.

        From ``INITIAL``, ``transition(State.RUN)`` publishes ENTER, IDLE, START
        and RUN. Transitions are serialized: one that is called while another
        runs starts when that one is over, from wherever it ended.

        When subscribers of a state fail, the bus takes the error path: to the
        state's error state (published with the ``ChannelFailures`` as its
        argument), then on to the graph's final state: on the way to RUN, a
        failure in START leads to START_ERROR, STOP, IDLE, EXIT, EXITED. Failures on the way
        are collected too; the walk still ends (see :mod:`archangel.states`).
        Having arrived, the bus keeps the error in :attr:`error` and raises it.
        If cancelled, the bus stays in the state it had entered.

        Raises:
            InvalidTransition: ``target`` cannot be reached from the current state.
            ChannelFailures: Subscribers failed; the bus is in the final state (or,
                on a graph without error states, in the state that failed).
                Its ``exceptions`` are the ``ChannelFailures`` of each state.
            RuntimeError: Called by a subscriber of the transition under way,
                which would wait for itself forever.
        """
        await self._walk_all(target)

    async def graceful(self) -> None:
        """Restart the lifecycle in place: RUN → STOP → IDLE → START → RUN (magicbus).

        One serialized operation: no other transition can slip in at IDLE.
        """
        await self._walk_all(cast(S, State.IDLE), cast(S, State.RUN))

    async def _walk_all(self, *targets: S) -> None:
        self._bind()
        if self._walker is not None and self._walker is asyncio.current_task():
            raise RuntimeError(
                f"{self!r}: transition() from inside a transition would wait for itself; "
                "run it in a task of its own"
            )
        async with self._lock:
            self._walker = asyncio.current_task()
            try:
                for target in targets:
                    await self._walk(target)
            finally:
                self._walker = None

    async def _walk(self, target: S) -> None:
        source = self._state
        walk = self._graph.walk(source, target)
        failures: list[ChannelFailures] = []
        failed = False
        while (state := walk.advance(failed)) is not None:
            self._enter(state)
            args = (failures[-1],) if walk.via_error else ()
            try:
                await self.publish(state, *args)
            except ChannelFailures as exc:
                failures.append(exc)
                failed = True
                logger.error("%r: subscribers of %r failed", self, state, exc_info=exc)
            else:
                failed = False
        if failures:
            names = ", ".join(repr(exc.channel) for exc in failures)
            message = (
                f"going from {source!r} to {target!r}, subscribers of {names} failed; "
                f"the bus is in {self._state!r}"
            )
            self._error = ChannelFailures(message, failures)
            raise self._error

    def _enter(self, state: S) -> None:
        self._state = state
        logger.info("bus state: %r", state)
        for states, waiter in self._waiters:
            if state in states and not waiter.done():
                waiter.set_result(state)

    async def wait(self, *states: S) -> S:
        """Return once the bus is in one of ``states`` (at once if it already is).

        Returns:
            The matching state the bus entered. The bus may have moved on
            already: a waiter for IDLE wakes up even if the transition went on
            to START before the waiter ran.

        Raises:
            InvalidTransition: A state is not in the bus's graph (it would never come).
        """
        loop = self._bind()
        if not states:
            raise InvalidArgument("wait() needs at least one state")
        for state in states:
            if state not in self._graph:
                raise InvalidTransition(f"{self!r} cannot wait for {state!r}: not in its graph")
        if self._state in states:
            return self._state
        waiter: asyncio.Future[S] = loop.create_future()
        entry = (frozenset(states), waiter)
        self._waiters.append(entry)
        try:
            return await waiter
        finally:
            self._waiters.remove(entry)

    # -- the event queue and timers ------------------------------------------------------

    def schedule(
        self,
        channel: Hashable,
        /,
        *args: Any,
        delay: float | None = None,
        at: float | None = None,
        first: bool = False,
        **kwargs: Any,
    ) -> None:
        """Queue a publish of ``channel`` (pyzenkit's event queue, on the loop's clock).

        Plain calls run in the order they were made (FIFO). ``first=True`` puts
        the event before every queued one (pyzenkit's ``schedule_next``; two
        such calls run last-scheduled first). ``delay`` (seconds) or ``at`` (a
        ``loop.time()`` value) make a timed event; a timed event that is due
        runs before the queued ones, and timed events due at the same instant
        run in the order they were scheduled. Events are published one at a
        time by a task that lives while the queue is not empty; a failing one
        is logged and the queue goes on (see :class:`archangel.timers.Scheduler`).
        Call from the loop's thread.

        Raises:
            InvalidArgument: Both ``delay`` and ``at``, or ``first`` with either.
            RuntimeError: No running event loop.
        """
        self._scheduler.add(self._bind(), (channel, args, kwargs), delay=delay, at=at, first=first)

    def schedule_next(self, channel: Hashable, /, *args: Any, **kwargs: Any) -> None:
        """pyzenkit's name for ``schedule(channel, *args, first=True)``."""
        self.schedule(channel, *args, first=True, **kwargs)

    def schedule_after(
        self, delay: float, channel: Hashable, /, *args: Any, **kwargs: Any
    ) -> None:
        """pyzenkit's name for ``schedule(channel, *args, delay=delay)``."""
        self.schedule(channel, *args, delay=delay, **kwargs)

    def schedule_at(self, when: float, channel: Hashable, /, *args: Any, **kwargs: Any) -> None:
        """pyzenkit's name for ``schedule(channel, *args, at=when)``; ``when`` is a loop time."""
        self.schedule(channel, *args, at=when, **kwargs)

    def every(self, interval: float, callback: Callback, /, *args: Any) -> Timer:
        """Call ``callback(*args)`` every ``interval`` seconds while it returns truthy (rel).

        See :class:`archangel.timers.Timer` for the contract (no drift, missed
        ticks skipped, exceptions logged). :meth:`close` cancels the timer.
        """
        self._timers = {timer for timer in self._timers if timer.active}
        timer = Timer(self._bind(), interval, callback, args)
        self._timers.add(timer)
        return timer

    def close(self) -> None:
        """Stop the background work: drop queued events, stop the queue and the timers.

        Dropped events are logged as a warning. Idempotent; the bus stays
        usable (publishing, transitions, and scheduling anew all still work).
        """
        dropped = self._scheduler.close()
        if dropped:
            logger.warning("%r: closed with %d scheduled messages not sent", self, dropped)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = loop = asyncio.get_running_loop()
        return loop

    def __repr__(self) -> str:
        state = getattr(self._state, "name", self._state)
        count = sum(map(len, self._plans.values()))
        return f"<Bus [{state}] {count} subscribers on {len(self._plans)} channels>"
