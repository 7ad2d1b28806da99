"""``Pipeline``: a supply and a train of cogs, run as a process.

::

    pipeline = Pipeline(tail("/var/log/app.log"), parse, keep(is_error), count)
    manager.spawn(pipeline)          # ps lists it with its counters
    await pipeline.stop()            # supply stops, items drain, finish, done

A pipeline reads its supply (a batch at a time) into its
:class:`~archangel.pipes.train.Train` until the supply ends or the pipeline is
stopped; then it drains the items in flight stage by stage, calling each
cog's ``finish`` once everything upstream of it has gone through (so the
items a cog flushes pass through the cogs after it), and finally ``done`` on
every cog. Killed, it cancels everything at once, counts the items it held
as ``dropped`` and still calls ``done``.

:meth:`Pipeline.notify` broadcasts to the supply, the cogs and the sink by
method name (deadbeat's ``Train.notify``); an ``id_setter`` gives every item
taken from the supply a unique id, which log lines and failures name.

What this module is not: it does not read files or sockets (see
:mod:`archangel.pipes.supplies`), defines no cogs (see :mod:`archangel.pipes.cogs`) and
does not run them (see :mod:`archangel.pipes.train`).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeAlias, runtime_checkable

from ..errors import InvalidArgument, NotCallable
from ..kernel.process import ExitReason
from ..kernel.task import TaskProcess
from ._broadcast import Broadcast
from .cogs import Cog, CogFunction, IdGetter, Setter, _unwrap, cog_name, default_id
from .train import CogCounters, Train, TrainCounters

__all__ = ["BatchSupply", "ErrorSink", "Pipeline", "Supply"]

logger = logging.getLogger(__name__)


@runtime_checkable
class BatchSupply(Protocol):
    """A supply that hands over whatever is ready as lists (the fast path).

    It may also have a ``close()`` method: stopping the pipeline then calls
    it instead of cancelling the read in progress, and the supply ends its
    ``batches()`` by itself once it has handed over what it holds. The
    supplies in :mod:`archangel.pipes.supplies` implement both.
    """

    def batches(self) -> AsyncIterator[list[Any]]:
        """An async iterator of non-empty lists of items."""
        ...


Supply: TypeAlias = Iterable[Any] | AsyncIterable[Any] | BatchSupply
"""Where items come from: any iterable, any async iterable, or a :class:`BatchSupply`."""

ErrorSink: TypeAlias = Callable[[Any, BaseException, Any], object]
"""Receives ``(item, exception, cog)`` for every item a cog (or the sink) failed on."""


class _Phase(enum.Enum):
    """Where a pipeline is in its life: the one state its methods look at.

    Each member's value is ``(shown, meaning)``; ``shown`` is the word ``ps``
    and the console read (:attr:`Pipeline.phase`), shared by the phases that
    differ only in what a later event does. ``_STOPPED`` phases remember that a
    stop was asked (and the supply closed), so a second stop does nothing.
    """

    def __init__(self, shown: str, meaning: str) -> None:
        self.shown = shown
        self.meaning = meaning

    # Members are singletons compared by identity: hash them so too. Enum's own
    # __hash__ is a Python call (about 100 ns on 3.11), and the feeder looks a
    # phase up twice per read.
    __hash__ = object.__hash__

    NEW = "new", "not started, or started and main() has not taken its first step"
    NEW_STOPPED = "new", "stopped before main()'s first step: main() starts stopping"
    NEW_KILLED = "new", "killed before main()'s first step: main() only cleans up"
    NEW_KILLED_STOPPED = "new", "killed and stopped before main()'s first step"
    RUNNING = "running", "the feeder feeds the train (between reads of an async supply)"
    READING = "running", "the feeder awaits the supply: a stop cancels that read"
    STOPPING = "stopping", "stopped: the feeder reads no further; the supply was closed"
    STOPPING_READ_CANCELLED = "stopping", "stopped by cancelling the read in progress"
    FINISHING = "finishing", "the supply has ended; the stages drain and finish"
    FINISHING_STOPPED = "finishing", "the supply has ended after a stop, or a stop came since"
    DONE = "done", "cleaned up: every cog's done() has run"
    DONE_STOPPED = "done", "cleaned up, and a stop was asked"


class _Event(enum.Enum):
    __hash__ = object.__hash__  # as _Phase's

    START = "main() takes its first step"
    KILL_EARLY = "kill() before main()'s first step"
    STOP = "stop() (on_stop)"
    READ = "the feeder starts awaiting the supply"
    READ_END = "the feeder has its answer"
    CANCEL_READ = "stop() cancels the read in progress"
    SUPPLY_END = "the feeder has ended"
    CLEANED = "_cleanup() has run"


_P, _E = _Phase, _Event

#: Every transition of a pipeline, and the only place one is written: an event
#: moves the phases in its row and leaves every other phase as it is (a read
#: that ends after a stop, a second stop, a kill once main() runs).
_TRANSITIONS: Mapping[_Event, Mapping[_Phase, _Phase]] = {
    _E.START: {_P.NEW: _P.RUNNING, _P.NEW_STOPPED: _P.STOPPING},
    _E.KILL_EARLY: {_P.NEW: _P.NEW_KILLED, _P.NEW_STOPPED: _P.NEW_KILLED_STOPPED},
    _E.STOP: {
        _P.NEW: _P.NEW_STOPPED,
        _P.NEW_KILLED: _P.NEW_KILLED_STOPPED,
        _P.RUNNING: _P.STOPPING,
        _P.READING: _P.STOPPING,
        _P.FINISHING: _P.FINISHING_STOPPED,
        _P.DONE: _P.DONE_STOPPED,
    },
    _E.READ: {_P.RUNNING: _P.READING},
    _E.READ_END: {_P.READING: _P.RUNNING},
    _E.CANCEL_READ: {_P.STOPPING: _P.STOPPING_READ_CANCELLED},
    _E.SUPPLY_END: {
        _P.RUNNING: _P.FINISHING,
        _P.STOPPING: _P.FINISHING_STOPPED,
        _P.STOPPING_READ_CANCELLED: _P.FINISHING_STOPPED,
    },
    _E.CLEANED: {
        **dict.fromkeys((_P.NEW, _P.NEW_KILLED, _P.RUNNING, _P.READING, _P.FINISHING), _P.DONE),
        **dict.fromkeys(
            (
                _P.NEW_STOPPED,
                _P.NEW_KILLED_STOPPED,
                _P.STOPPING,
                _P.STOPPING_READ_CANCELLED,
                _P.FINISHING_STOPPED,
            ),
            _P.DONE_STOPPED,
        ),
    },
}

_KILLED_BEFORE_MAIN = frozenset({_P.NEW_KILLED, _P.NEW_KILLED_STOPPED})
_BEFORE_MAIN = frozenset({_P.NEW, _P.NEW_STOPPED, *_KILLED_BEFORE_MAIN})
_DONE = frozenset({_P.DONE, _P.DONE_STOPPED})


class Pipeline(TaskProcess):
    """A supply and a train of cogs, run as a process (kind ``"pipeline"``).

    Args:
        supply: Any iterable or async iterable of items; a :class:`BatchSupply`
            is read a batch at a time. A sync iterable must not block.
        *cogs: The train, in order: sync or async callables taking one item and
            returning an iterable of items or None (see :mod:`archangel.pipes.cogs`).
        name: A label for ``ps`` and logs.
        sink: Receives every item the last cog outputs (sync, or ``async def``
            for a sink that waits: it then gets its own bounded inbox). None
            discards them (they are still counted as ``out``).
        errors: Called as ``errors(item, exception, cog)`` for every failed
            item; must not block. Its own failures are logged (with the
            item's id, rate-limited like a cog's) and ignored.
        id_getter: Names an item in log lines (default :func:`~archangel.pipes.cogs.default_id`).
        id_setter: Gives every item taken from the supply a unique id:
            ``id_setter(item, id) -> item`` (a setter, such as
            ``itemsetter("id")``, or a function wrapping the item). Without
            one no id is set and nothing is spent per item on ids.
        ids: The ids ``id_setter`` hands out, in order; by default 1, 2, 3...
            (unique within the pipeline). Pass e.g. ``(uuid.uuid4().hex for
            _ in itertools.count())`` for ids unique across processes.
        batch: How many items of a sync iterable to take at a time.
        buffer: The bound of each inbox (before every async cog and an async sink).
        log_rate: At most this many failure log lines per second per cog (and
            for the error sink); the rest are counted and summarised
            ("suppressed K").

    Every :class:`~archangel.pipes.cogs.Cog` of the train is told its pipeline
    (:meth:`~archangel.pipes.cogs.Cog.attach`), so it can :meth:`notify`.

    Raises:
        InvalidArgument: A cog, sink, error sink or ``id_setter`` that is not
            callable, ``ids`` without an ``id_setter``, a ``batch``/``buffer``
            below 1, or a cog with a bad ``release_every``.
    """

    kind = "pipeline"
    keep_details = True

    def __init__(
        self,
        supply: Supply,
        *cogs: CogFunction,
        name: str | None = None,
        sink: Callable[[Any], Any] | None = None,
        errors: ErrorSink | None = None,
        id_getter: IdGetter | None = None,
        id_setter: Setter | None = None,
        ids: Iterable[object] | None = None,
        batch: int = 512,
        buffer: int = 256,
        log_rate: int = 10,
    ) -> None:
        if not isinstance(supply, Iterable | AsyncIterable | BatchSupply):
            raise InvalidArgument(f"Pipeline supply {supply!r} is not an iterable")
        for cog in (*cogs, sink, errors, id_setter):
            if cog is not None and not callable(cog):
                raise NotCallable(
                    f"Pipeline cog, sink, error sink or id_setter {cog!r} is not callable"
                )
        if ids is not None and id_setter is None:
            raise InvalidArgument(f"Pipeline ids {ids!r} given without an id_setter to set them")
        if batch < 1 or buffer < 1:
            raise InvalidArgument(f"Pipeline batch and buffer must be >= 1, got {batch}, {buffer}")
        if name is not None:
            self.name = name
        self.supply = supply
        self.batch = batch
        self.train = Train(
            cogs,
            owner=self,
            sink=sink,
            errors=errors,
            id_getter=id_getter or default_id,
            id_setter=id_setter,
            ids=ids,
            buffer=buffer,
            log_rate=log_rate,
            on_crash=self._crashed,
        )
        self._phase = _Phase.NEW
        self._feeder: asyncio.Task[None] | None = None
        self._crash: BaseException | None = None
        self._done = 0  # how many cogs have had done() called, in train order
        parts: list[tuple[str, object]] = [(f"supply {cog_name(supply)}", supply)]
        parts += [(f"cog {c.name}", cog) for c, cog in zip(self.train.stats, cogs, strict=True)]
        if sink is not None:
            parts.append((f"sink {cog_name(sink)}", sink))
        self._broadcast = Broadcast(self, parts, self.train.id_getter, log_rate)
        for cog in cogs:
            if isinstance(_unwrap(cog)[0], Cog):
                cog.attach(self)  # type: ignore[attr-defined]

    # -- what ps and the console read -----------------------------------------

    @property
    def cogs(self) -> tuple[CogFunction, ...]:
        """The train, in order."""
        return self.train.cogs

    @property
    def counters(self) -> TrainCounters:
        """Live counters of the whole train (see :class:`~archangel.pipes.train.TrainCounters`)."""
        return self.train.counters

    @property
    def cog_counters(self) -> list[CogCounters]:
        """Live counters of each cog in train order (see :class:`CogCounters`)."""
        return list(self.train.stats)

    @property
    def buffers(self) -> list[tuple[int, int]]:
        """``(occupancy, bound)`` of each inbox, in train order."""
        return [(len(s.inbox), s.inbox.bound) for s in self.train.stages[1:]]

    @property
    def phase(self) -> str:
        """``new``, ``running``, ``stopping``, ``finishing`` or ``done``."""
        return self._phase.shown

    @property
    def _reading(self) -> bool:
        """Whether the feeder awaits the supply (tests wait for this)."""
        return self._phase is _Phase.READING

    def _move(self, event: _Event) -> _Phase:
        """Apply ``event`` (see ``_TRANSITIONS``); return the phase it left."""
        before = self._phase
        self._phase = _TRANSITIONS[event].get(before, before)
        return before

    def details(self) -> Mapping[str, Any]:
        """Phase, train counters, inbox occupancy and per-cog counters."""
        return {
            "phase": self._phase.shown,
            **self.counters,
            "notify_failed": self.notify_failed,
            "buffers": [list(b) for b in self.buffers],
            "cogs": [{"cog": c.name, **c} for c in self.train.stats],
        }

    # -- running ----------------------------------------------------------------

    async def run(self) -> TrainCounters:
        """Run without a manager: start, wait for the end, return the counters.

        Cancelling ``run`` kills the pipeline (its cogs still get ``done``).

        Raises:
            Exception: Whatever ended the pipeline with an error (a failing supply).
        """
        self.start()
        try:
            await self.wait()
        except asyncio.CancelledError:
            self.kill()
            await asyncio.shield(self.wait())
            raise
        if self.error is not None:
            raise self.error
        return self.counters

    async def main(self) -> TrainCounters:
        """Feed the supply to the train until it ends or the pipeline stops; then finish."""
        if self._phase in _KILLED_BEFORE_MAIN:  # killed between start() and its first step
            await self._cleanup()
            raise asyncio.CancelledError
        loop = asyncio.get_running_loop()
        train = self.train
        self._move(_Event.START)
        train.start(loop, self.name)
        self._feeder = loop.create_task(self._feed(), name=f"{self.name}:supply")
        failure: BaseException | None = None
        try:
            await asyncio.wait([self._feeder])  # not `await feeder`: a kill must not cancel it
            failure = None if self._feeder.cancelled() else self._feeder.exception()
            if failure is not None:
                logger.error(
                    "pipeline %s (pid %s): supply failed", self.name, self.pid, exc_info=failure
                )
            self._move(_Event.SUPPLY_END)
            await train.finish(train.first)
            for stage in train.stages[1:]:
                stage.inbox.close()
                await asyncio.wait(stage.workers)
                await train.finish(stage)
        except asyncio.CancelledError:
            if self._crash is None:
                raise
            failure = self._crash
        finally:
            await self._cleanup()
        if failure is not None:
            raise failure
        return self.counters

    async def _feed(self) -> None:
        supply: Any = self.supply
        iterator: Any = None
        try:
            if isinstance(supply, BatchSupply):
                iterator = supply.batches()
                await self._feed_async(iterator, batched=True)
            elif isinstance(supply, AsyncIterable):
                iterator = aiter(supply)
                await self._feed_async(iterator, batched=False)
            else:
                iterator = iter(supply)
                await self._feed_sync(iterator)
        except asyncio.CancelledError:
            if self._phase is not _Phase.STOPPING_READ_CANCELLED:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        finally:
            if iterator is not None:
                await _close(iterator)

    async def _feed_sync(self, iterator: Any) -> None:
        islice, size, take, sleep = itertools.islice, self.batch, self.train.enter, asyncio.sleep
        while self._phase is _Phase.RUNNING:
            batch = list(islice(iterator, size))
            if not batch:
                return
            await take(batch)
            await sleep(0)  # a sync supply never waits: let the loop breathe

    async def _feed_async(self, iterator: Any, *, batched: bool) -> None:
        # The table's rows bound once, and no _move() call: this runs per read,
        # per item of a plain async iterable, where each lookup shows. Measured
        # on CPython 3.11, 100,000 items one a read through a pass-through cog
        # (best of 8): 2.29 µs an item with the booleans this replaced, 2.42 µs
        # like this; through _move() with Enum's own hash it was 3.3 µs.
        take, running = self.train.enter, _Phase.RUNNING
        on_read, on_read_end = _TRANSITIONS[_Event.READ], _TRANSITIONS[_Event.READ_END]
        while self._phase is running:
            self._phase = on_read.get(self._phase, self._phase)
            try:
                got = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                self._phase = on_read_end.get(self._phase, self._phase)
            if not batched:
                await take([got])
            elif got:
                await take(got if isinstance(got, list) else list(got))

    # -- broadcasts -------------------------------------------------------------

    def notify(self, name: str, *args: Any) -> int:
        """Call ``name(*args)`` on every part of the train that has such a method.

        deadbeat's ``Train.notify``: the supply, then the cogs in train order,
        then the sink, each if it has a method ``name``. The usual ones are
        ``event_finished(event_id)`` (the event is through: release whatever
        is held for it) and ``event_renamed(old_id, new_id)`` (an event goes on
        under a new id, merged or split). Call it from a cog, the sink, or any
        code on the pipeline's loop; handlers are plain (sync) methods and run
        at once, before ``notify`` returns.

        A handler that raises (or is ``async def``) is logged with the first
        argument as the id and the handler named, rate-limited like a cog's
        failures, and counted in :attr:`notify_failed`; the others are still
        called. Handlers are looked up by the first ``notify`` of each name.
        Once the pipeline has ended (every cog's ``done`` ran), nothing is called.

        Returns:
            How many handlers ran without raising.

        Raises:
            InvalidArgument: ``name`` is not a public method name, or is one the
                pipeline calls itself (``finish``, ``done``, ``release``, ``close``...).
        """
        if self._phase in _DONE:
            self._broadcast.handlers(name)  # a bad name is still refused
            return 0
        return self._broadcast.send(name, args)

    @property
    def notify_failed(self) -> int:
        """How many notification handlers raised (or were async), over every :meth:`notify`."""
        return self._broadcast.failed

    def _crashed(self, exc: BaseException) -> None:
        self._crash = exc
        if self.task is not None:
            self.task.cancel()

    # -- stopping ---------------------------------------------------------------

    def on_kill(self, reason: ExitReason) -> None:
        """Cancel the pipeline; every cog still gets ``done`` (but not ``finish``).

        The items in flight are abandoned and counted as ``dropped``.
        """
        if self.task is not None and self._phase in _BEFORE_MAIN:
            # Cancelling now would drop main() before its first step, and with
            # it the done() calls: let main() see the kill and clean up instead.
            self._move(_Event.KILL_EARLY)
            return
        super().on_kill(reason)

    def on_stop(self) -> None:
        """Stop the supply; items in flight drain, then ``finish`` and ``done`` run."""
        if self.task is None:
            super().on_stop()
            return
        before = self._move(_Event.STOP)
        if self._phase is before:
            return  # asked already
        close = getattr(self.supply, "close", None)
        if isinstance(self.supply, BatchSupply) and callable(close):
            try:
                close()  # the supply hands over what it holds, then ends
                return
            except Exception:
                logger.exception(
                    "pipeline %s (pid %s): closing its supply raised", self.name, self.pid
                )
        feeder = self._feeder
        if feeder is not None and before is _Phase.READING and not feeder.done():
            self._move(_Event.CANCEL_READ)
            feeder.cancel()

    async def _cleanup(self) -> None:
        """Cancel what still runs, count what was in flight as dropped, call ``done``."""
        interrupted = False
        self.train.stop_timers()
        tasks = self.train.tasks()
        if self._feeder is not None:
            tasks.append(self._feeder)
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        while pending:
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:
                interrupted = True
            pending = [t for t in pending if not t.done()]
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the failure is reported once, by main
        dropped = self.train.drop()
        if dropped:
            logger.warning(
                "pipeline %s (pid %s): %d items in flight dropped", self.name, self.pid, dropped
            )
        self.train.flush_logs()
        self._broadcast.flush()
        cogs = self.train.cogs
        while self._done < len(cogs):
            index = self._done
            self._done += 1
            done = getattr(cogs[index], "done", None)
            if not callable(done):
                continue
            try:
                result = done()
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                interrupted = True
            except Exception:
                logger.exception(
                    "pipeline %s (pid %s): done() of cog %s raised",
                    self.name,
                    self.pid,
                    self.train.stats[index].name,
                )
        self._move(_Event.CLEANED)
        if interrupted:
            raise asyncio.CancelledError


async def _close(iterator: Any) -> None:
    """Close a supply's iterator the pipeline opened (async iterators, generators)."""
    try:
        if inspect.isgenerator(iterator):
            iterator.close()
        else:
            aclose = getattr(iterator, "aclose", None)
            if callable(aclose):
                await aclose()
    except Exception:
        logger.exception("closing supply iterator %r raised", iterator)
