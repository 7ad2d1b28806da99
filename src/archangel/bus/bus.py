"""The bus: channels, and the lifecycle they are told about.

A :class:`Bus` carries messages between the parts of an app (magicbus's bus,
rel's helpers and pyzenkit's event queue, on asyncio) and walks a state graph
(:mod:`archangel.bus.states`), publishing each state it enters on the channel named
by that state. The channels themselves (subscribing, publishing, emitting,
asking, piping, latches) are :class:`archangel.bus.channels.Channels`, which
:class:`Bus` extends; this module adds the state machine, the event queue and
the timers. What it is not: it does no I/O, installs no signal handlers (the
app turns signals into :meth:`~archangel.bus.channels.Channels.emit` calls) and
starts no threads.

Threading: :meth:`~archangel.bus.channels.Channels.emit` may be called from any
thread; everything else belongs to the loop the bus runs on. The bus binds to
the running loop whenever :meth:`~Bus.transition`, :meth:`~Bus.wait`,
:meth:`~Bus.schedule`, :meth:`~Bus.every` or
:meth:`~archangel.bus.channels.Channels.emit` runs in one.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Hashable
from typing import Any, Generic, TypeVar, cast, overload

from ..errors import ChannelFailures, InvalidArgument, InvalidTransition
from .channels import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from .channels import STOP as STOP
from .channels import Callback as Callback
from .channels import Channels
from .queue import ScheduledEvent, Scheduler
from .states import LIFECYCLE, State, StateGraph
from .timers import Timer

__all__ = ["DEFAULT_PRIORITY", "STOP", "Bus", "Callback", "TransitionResults"]

logger = logging.getLogger(__name__)


def _label(state: object) -> str:
    """A state as logs and messages name it: ``START``, not ``<State.START>``."""
    return str(getattr(state, "name", state))


S = TypeVar("S", bound=Hashable)


class TransitionResults(list[list[Any]], Generic[S]):
    """What :meth:`Bus.transition` returns: what the subscribers returned (magicbus).

    A list with one entry per state entered, in the order entered: the list
    of that state's subscribers' results, as :meth:`~archangel.bus.channels.Channels.publish`
    returns it. Made by the bus; read it.
    """

    __slots__ = ("kept", "states")

    def __init__(self) -> None:
        super().__init__()
        #: The states entered, in order (``results[i]`` is what ``states[i]``'s
        #: subscribers returned).
        self.states: list[S] = []
        #: False when subscribers were cut short at the transition's deadline.
        self.kept = True

    def __repr__(self) -> str:
        pairs = ", ".join(map("{!r}: {!r}".format, self.states, self))
        return f"<TransitionResults {{{pairs}}}{'' if self.kept else ' [cut short]'}>"


class Bus(Channels, Generic[S]):
    """Channels with prioritised subscribers, and a state machine published through them.

    ``Bus()`` runs on the lifecycle graph (:data:`archangel.bus.states.LIFECYCLE`)
    and starts in ``State.INITIAL``. A channel is any hashable; a state's
    channel is the state itself. Subscribing and sending messages
    (:meth:`~archangel.bus.channels.Channels.subscribe`,
    :meth:`~archangel.bus.channels.Channels.publish` and the rest) come from
    :class:`~archangel.bus.channels.Channels`.

    Args:
        graph: The state graph to walk; the lifecycle by default.
        initial: The state to start in; ``graph.initial`` by default.
    """

    @overload
    def __init__(self: Bus[State], graph: None = None, initial: State | None = None) -> None: ...
    @overload
    def __init__(self, graph: StateGraph[S], initial: S | None = None) -> None: ...
    def __init__(self, graph: StateGraph[Any] | None = None, initial: Any = None) -> None:
        super().__init__()
        self._graph: StateGraph[S] = graph if graph is not None else cast(Any, LIFECYCLE)
        state = initial if initial is not None else self._graph.initial
        if state not in self._graph:
            raise InvalidTransition(f"initial state {state!r} is not in {self._graph!r}")
        self._state: S = cast(S, state)
        self._error: ChannelFailures | None = None
        self._lock = asyncio.Lock()
        self._walker: asyncio.Task[Any] | None = None
        self._waiters: list[tuple[frozenset[S], asyncio.Future[S]]] = []
        self._scheduler = Scheduler(self.publish, self, pipe=self.pipe)
        # Weak: a timer that is over and dropped by its owner goes; one re-armed is still here.
        self._timers: weakref.WeakSet[Timer] = weakref.WeakSet()

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

    async def transition(
        self, target: S, *, deadline: float | None = None
    ) -> TransitionResults[S]:
        """Walk the shortest path to ``target``, publishing each state entered, in order.

        From ``INITIAL``, ``transition(State.RUN)`` publishes ENTER, IDLE, START
        and RUN. Transitions are serialized: one that is called while another
        runs starts when that one is over, from wherever it ended.

        When subscribers of a state fail, the bus takes the error path: to the
        state's error state (published with the ``ChannelFailures`` as its
        argument), then on to the graph's final state: on the way to RUN, a
        failure in START leads to START_ERROR, STOP, IDLE, EXIT, EXITED. Failures on the way
        are collected too; the walk still ends (see :mod:`archangel.bus.states`).
        Having arrived, the bus keeps the error in :attr:`error` and raises it.
        If cancelled, the bus stays in the state it had entered.

        Args:
            target: The state to reach.
            deadline: A ``loop.time()`` by which the walk should be over (an
                app's stop). A subscriber still awaiting at the deadline is
                cancelled, logged with its state and where it was awaiting, and
                the walk goes on to the next one. Each awaitable subscriber gets
                at least :data:`~archangel.bus.channels.DEADLINE_GRACE` seconds from
                its start, even past the deadline, so a step that begins late
                can still do its work; one that has not ended that long after
                its cancellation (it caught it and went on) is left behind,
                logged. A subscriber cut short is not a failure: no error path
                is taken. Plain (sync) subscribers are never interrupted; one
                begun before the deadline that ends after it is logged, and
                counts as cut short.
                Awaitable subscribers of a walk with a deadline run as tasks of
                their own.

        Returns:
            What the subscribers returned (magicbus's list of lists), a
            :class:`TransitionResults`, one list per state entered, in order,
            each the results of that state's publish (None for a subscriber cut
            short). Its :attr:`~TransitionResults.states` are the states
            entered, and :attr:`~TransitionResults.kept` is False when
            subscribers were cut short at the deadline (or a plain one ran
            past it). (It used to be that
            bool alone: read ``.kept`` now; the list is empty, so falsy,
            when the bus was in ``target`` already.)

        Raises:
            InvalidTransition: ``target`` cannot be reached from the current state.
            ChannelFailures: Subscribers failed; the bus is in the final state (or,
                on a graph without error states, in the state that failed).
                Its ``exceptions`` are the ``ChannelFailures`` of each state.
            RuntimeError: Called by a subscriber of the transition under way,
                which would wait for itself forever.
        """
        return await self._walk_all((target,), deadline)

    async def graceful(self) -> TransitionResults[S]:
        """Restart the lifecycle in place: RUN → STOP → IDLE → START → RUN (magicbus).

        One serialized operation: no other transition can slip in at IDLE.

        Returns:
            What the subscribers returned, as :meth:`transition` does.
        """
        return await self._walk_all((cast(S, State.IDLE), cast(S, State.RUN)), None)

    async def _walk_all(
        self, targets: tuple[S, ...], deadline: float | None
    ) -> TransitionResults[S]:
        self._bind()
        current = asyncio.current_task()
        if current is not None and current in (self._walker, self._bounded):
            raise RuntimeError(
                f"{self!r}: transition() from inside a transition would wait for itself; "
                "run it in a task of its own"
            )
        async with self._lock:
            self._walker = current
            try:
                results: TransitionResults[S] = TransitionResults()
                for target in targets:
                    await self._walk(target, deadline, results)
                return results
            finally:
                self._walker = None

    async def _walk(
        self, target: S, deadline: float | None, results: TransitionResults[S]
    ) -> None:
        source = self._state
        walk = self._graph.walk(source, target)
        failures: list[ChannelFailures] = []
        failed = False
        cut = 0
        while (state := walk.advance(failed)) is not None:
            self._enter(state)
            args = (failures[-1],) if walk.via_error else ()
            results.states.append(state)
            try:
                if deadline is None:
                    published = await self.publish(state, *args)
                else:
                    published, cut_here = await self._publish_by(state, args, deadline)
                    cut += cut_here
            except ChannelFailures as exc:
                results.append([])  # raised below: nobody sees this list
                failures.append(exc)
                failed = True
                logger.error("%r: subscribers of %s failed", self, _label(state), exc_info=exc)
            else:
                results.append(published)
                failed = False
        if failures:
            names = ", ".join(_label(exc.channel) for exc in failures)
            message = (
                f"going from {_label(source)} to {_label(target)}, subscribers of {names} "
                f"failed; the bus is in {_label(self._state)}"
            )
            self._error = ChannelFailures(message, failures)
            raise self._error
        if cut:
            results.kept = False

    def _enter(self, state: S) -> None:
        self._state = state
        logger.info("bus state: %s", _label(state))
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
        pipe: bool = False,
        **kwargs: Any,
    ) -> ScheduledEvent:
        """Queue a publish of ``channel`` (pyzenkit's event queue, on the loop's clock).

        Plain calls run in the order they were made (FIFO). ``first=True`` puts
        the event before every queued one (pyzenkit's ``schedule_next``; two
        such calls run last-scheduled first). ``delay`` (seconds) or ``at`` (a
        ``loop.time()`` value, never a ``time.time()`` one) make a timed event;
        a timed event that is due runs before the queued ones, and timed events
        due at the same instant run in the order they were scheduled. Events are published one at a
        time by a task that lives while the queue is not empty; a failing one
        is logged and the queue goes on (see :class:`archangel.bus.queue.Scheduler`).
        Call from the loop's thread.

        ``pipe=True`` sends the event through :meth:`~archangel.bus.channels.Channels.pipe`
        instead of :meth:`~archangel.bus.channels.Channels.publish`: pyzenkit's
        callback chain, where the first argument is the value each subscriber
        gets from the one before (``schedule("event", value, pipe=True)``).

        For a wall-clock time ``when`` (a ``time.time()`` value, as pyzenkit's
        ``schedule_at`` takes), pass ``delay=when - time.time()``. An ``at``
        that is nearer the wall clock's now than the loop's is taken for a
        wall-clock reading and refused: on the loop's clock it would come
        decades from now.

        Returns:
            The event's :class:`~archangel.bus.queue.ScheduledEvent`:
            ``event.cancel()`` takes it out of the queue (deadbeat's ``dequeue``).
            :attr:`queued` and :attr:`next_due` tell what the queue holds.

        Raises:
            InvalidArgument: Both ``delay`` and ``at``, or ``first`` with either;
                a ``delay`` or ``at`` that is not a finite number; an ``at``
                that is a wall-clock reading (the message says how to convert);
                ``pipe=True`` with no value to pipe.
            RuntimeError: No running event loop.
        """
        return self._scheduler.add(
            self._bind(), channel, args, kwargs, delay=delay, at=at, first=first, pipe=pipe
        )

    def schedule_next(self, channel: Hashable, /, *args: Any, **kwargs: Any) -> ScheduledEvent:
        """pyzenkit's name for ``schedule(channel, *args, first=True)``."""
        return self.schedule(channel, *args, first=True, **kwargs)

    def schedule_after(
        self, delay: float, channel: Hashable, /, *args: Any, **kwargs: Any
    ) -> ScheduledEvent:
        """pyzenkit's name for ``schedule(channel, *args, delay=delay)``."""
        return self.schedule(channel, *args, delay=delay, **kwargs)

    def schedule_at(
        self, when: float, channel: Hashable, /, *args: Any, **kwargs: Any
    ) -> ScheduledEvent:
        """pyzenkit's name for ``schedule(channel, *args, at=when)``; ``when`` is a loop time.

        pyzenkit's ``schedule_at`` takes a wall-clock time; here one is refused
        with :class:`~archangel.errors.InvalidArgument` (see :meth:`schedule`).
        """
        return self.schedule(channel, *args, at=when, **kwargs)

    @property
    def queued(self) -> int:
        """How many scheduled events wait to be sent (pyzenkit's ``count``).

        An event being sent is no longer counted; a cancelled one neither.
        """
        return len(self._scheduler.queue)

    @property
    def next_due(self) -> float | None:
        """When the next scheduled event is due, a ``loop.time()`` (pyzenkit's ``when``).

        None when nothing is queued; the loop's now when an untimed event
        waits (it goes as soon as the queue gets to it); otherwise the
        earliest deadline of the timed events, in the past when one is overdue.
        """
        return self._scheduler.next_due(self._loop)

    def every(
        self, interval: float, callback: Callback, /, *args: Any, delay: float | None = None
    ) -> Timer:
        """Call ``callback(*args)`` every ``interval`` seconds while it returns truthy (rel).

        The first call comes one interval from now, or ``delay`` seconds from
        now: ``delay=0`` makes it at the loop's next iteration (mode's
        ``exec_first``). See :class:`archangel.bus.timers.Timer` for the contract
        (no drift, missed ticks skipped, exceptions logged, ``rearm()`` after
        ``cancel()``). :meth:`close` cancels the timer, also one re-armed
        after it had ended.

        Raises:
            InvalidArgument: ``interval`` is not a positive number, or ``delay``
                is negative.
            NotCallable: ``callback`` is not callable.
        """
        timer = Timer(self._bind(), interval, callback, args, delay=delay)
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
        for timer in list(self._timers):
            timer.cancel()

    def __repr__(self) -> str:
        state = _label(self._state)
        count = sum(map(len, self._plans.values()))
        return f"<Bus [{state}] {count} subscribers on {len(self._plans)} channels>"
