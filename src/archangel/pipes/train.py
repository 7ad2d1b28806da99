"""The train: a pipeline's cogs compiled into stages, the runner and the counters.

The train is compiled once into *stages*. The first stage takes the supply's
batches and runs the leading sync cogs; every async cog starts a new stage
with its own bounded inbox and up to ``concurrency`` worker tasks, followed
by the sync cogs after it; an async sink is a last stage of its own. Sync
cogs run inline, a whole batch at a time and a cog at a time, with no await
between them: a train of sync cogs costs about what a plain loop does. An
inbox that is full makes its producer wait, so a slow stage slows the supply
instead of growing memory.

What a pipeline uses only when asked costs nothing per item otherwise: ids
are set by :meth:`Train.take_ids` only with an ``id_setter`` (the feeder
calls :attr:`Train.enter`, one or the other), and release timers are armed
only for the cogs that set ``release_every``.

This module runs items through cogs and counts them. It knows nothing of
supplies or of the process lifecycle: that is :mod:`archangel.pipes.pipeline`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..bus import timers
from ..errors import InvalidArgument
from .cogs import (
    CogFunction,
    IdGetter,
    Setter,
    _is_async,
    _is_async_gen,
    _unwrap,
    cog_name,
    default_id,
)
from .inbox import END, FailureLog, Inbox

__all__ = ["CogCounters", "Train", "TrainCounters"]

logger = logging.getLogger("archangel.pipes.pipeline")  # one logger for the pipeline

_COG_KEYS = ("in", "out", "swallowed", "failed", "flushed", "dropped", "in_flight", "seconds")
_TRAIN_KEYS = ("in", "out", "swallowed", "failed", "flushed", "dropped", "in_flight")


class CogCounters(Mapping[str, float]):
    """Live counters of one cog, a read-only mapping.

    Keys: ``in`` (items received), ``out`` (items output, including those
    flushed by ``finish``), ``swallowed`` (inputs that produced nothing),
    ``failed`` (inputs that raised: what they had output is dropped),
    ``flushed`` (items ``finish`` or a timed ``release`` returned), ``dropped`` (inputs the cog was
    working on when the pipeline was killed), ``in_flight`` (inputs it is
    working on now) and ``seconds`` (time spent in the cog, on the loop's
    clock; for an async cog, from the call until its result). The cog's
    label is :attr:`name`. For a cog that outputs at most one item per
    input, ``in + flushed == out + swallowed + failed + dropped + in_flight``
    whenever it is read.
    """

    __slots__ = (
        "dropped",
        "failed",
        "flushed",
        "in_flight",
        "n_in",
        "n_out",
        "name",
        "seconds",
        "swallowed",
    )

    def __init__(self, name: str) -> None:
        #: The cog's label.
        self.name = name
        self.n_in = self.n_out = self.swallowed = self.failed = self.flushed = 0
        self.dropped = self.in_flight = 0
        self.seconds = 0.0

    def __getitem__(self, key: str) -> float:
        if key == "in":
            return self.n_in
        if key == "out":
            return self.n_out
        if key in _COG_KEYS:
            value: float = getattr(self, key)
            return value
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(_COG_KEYS)

    def __len__(self) -> int:
        return len(_COG_KEYS)

    def __repr__(self) -> str:
        return f"<CogCounters {self.name} {dict(self)}>"


class TrainCounters(Mapping[str, int]):
    """Live counters of a whole train, a read-only mapping.

    Keys: ``in`` (items taken from the supply), ``out`` (items the last cog
    output and the sink accepted), ``swallowed`` and ``failed`` (summed over
    the cogs; ``failed`` also counts items the sink or the ``id_setter``
    raised on), ``flushed`` (items the cogs' ``finish`` and ``release``
    returned), ``dropped`` (items abandoned when
    the pipeline was killed: in an inbox, or being worked on) and
    ``in_flight`` (items inside the train now, 0 once the pipeline has
    ended). For a train of cogs that output at most one item per input,
    ``in + flushed == out + swallowed + failed + dropped + in_flight``
    whenever it is read, even from inside a cog or the error sink.
    """

    __slots__ = ("_train",)

    def __init__(self, train: Train) -> None:
        self._train = train

    def __getitem__(self, key: str) -> int:
        train = self._train
        if key == "in":
            return train.n_in
        if key == "out":
            return train.n_out
        if key == "swallowed":
            return sum(c.swallowed for c in train.stats)
        if key == "failed":
            return sum(c.failed for c in train.stats) + train.sink_failed + train.id_failed
        if key == "flushed":
            return sum(c.flushed for c in train.stats)
        if key == "dropped":
            return train.n_dropped
        if key == "in_flight":
            return train.in_flight()
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(_TRAIN_KEYS)

    def __len__(self) -> int:
        return len(_TRAIN_KEYS)

    def __repr__(self) -> str:
        return f"<TrainCounters {dict(self)}>"


class Stage:
    """A run of the train: an async cog (or the supply, or the sink) then sync cogs."""

    __slots__ = ("agen", "first", "fn", "inbox", "index", "limit", "next", "stop", "workers")

    def __init__(self, index: int | None, fn: Any, limit: int, first: int, stop: int, bound: int):
        self.index = index  # the async cog's index; None: the supply; len(cogs): the sink
        self.fn = fn
        self.agen = fn is not None and _is_async_gen(fn)
        self.limit = limit
        self.first = first  # the sync cogs run after it: cogs[first:stop]
        self.stop = stop
        self.inbox = Inbox(bound)
        self.next: Stage | None = None
        self.workers: list[asyncio.Task[None]] = []


class Train:
    """The cogs of one pipeline, compiled into stages, with their counters.

    Every item inside the train is counted in exactly one place: in a cog's
    ``in_flight`` (handed to the cog, not yet output, swallowed or failed),
    in an inbox (or waiting to get into one), or at the sink (handed to it,
    not yet accepted or failed). Sync cogs take a whole batch at once: the
    batch is in the cog's ``in_flight`` until the cog is through with it, so
    the counters add up even when read from inside a cog.

    Args:
        cogs: The cogs in train order.
        owner: Names the train in logs (its ``name`` and ``pid`` are read).
        sink: Receives what the last cog outputs (sync, or async: a stage).
        errors: Called as ``errors(item, exception, cog)`` per failed item.
        id_getter: Names an item in log lines.
        id_setter: Puts a unique id into every item taken from the supply,
            ``id_setter(item, id) -> item``; None sets none.
        ids: Where the ids come from (default 1, 2, 3...).
        buffer: The bound of each inbox.
        log_rate: Failure log lines per second per cog (and for the error sink).
        on_crash: Called with an unexpected exception of a worker (a bug).

    Raises:
        InvalidArgument: A cog whose ``release_every`` is not a positive number
            of seconds, or that has no callable ``release``.
    """

    #: How a batch from the supply enters the train (:meth:`take`, or
    #: :meth:`take_ids` when there is an ``id_setter``).
    enter: Callable[[list[Any]], Awaitable[None]]

    def __init__(
        self,
        cogs: Sequence[CogFunction],
        *,
        owner: Any,
        sink: Callable[[Any], Any] | None = None,
        errors: Callable[[Any, BaseException, Any], object] | None = None,
        id_getter: IdGetter = default_id,
        id_setter: Setter | None = None,
        ids: Iterable[object] | None = None,
        buffer: int = 256,
        log_rate: int = 10,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.cogs = tuple(cogs)
        self.owner = owner
        self.sink = sink
        self.errors = errors
        self.id_getter = id_getter
        self.id_setter = id_setter
        self.ids: Iterator[object] = iter(ids) if ids is not None else itertools.count(1)
        self.enter = self.take if id_setter is None else self.take_ids
        self.on_crash = on_crash
        self.log_rate = log_rate
        self.n_in = self.n_out = self.sink_failed = self.n_dropped = self.id_failed = 0
        self.n_sunk = 0  # items handed to the sink (accepted, failed, or still there)
        self.stats = [CogCounters(cog_name(cog)) for cog in cogs]
        self.logs = [FailureLog(f"cog {c.name}", log_rate) for c in self.stats]
        self.logs.append(FailureLog(f"sink {cog_name(sink)}", log_rate))
        self.logs.append(FailureLog(f"id_setter {cog_name(id_setter)}", log_rate))
        self.errors_log = FailureLog(f"error sink {cog_name(errors)}", log_rate)
        self.clock: Callable[[], float] = _no_clock
        self._fns: list[Any] = []
        self._release_fns: dict[int, Callable[[float], Any]] = {}
        #: Cog index -> seconds between its timed releases, for the cogs that set one.
        self.release_every = self._release_intervals()
        self._timers: dict[int, timers.Timer] = {}
        self._releasing: dict[int, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stages = self._compile(buffer)
        self.first = self.stages[0]
        self._stage_of: dict[int, Stage] = {}
        for stage in self.stages:
            if stage.index is not None and stage.index < len(self.cogs):
                self._stage_of[stage.index] = stage
            for index in range(stage.first, stage.stop):
                self._stage_of[index] = stage

    def _release_intervals(self) -> dict[int, float]:
        """Cog index -> its ``release_every``, for the cogs that set one."""
        found: dict[int, float] = {}
        for index, (cog, counters) in enumerate(zip(self.cogs, self.stats, strict=True)):
            every = getattr(cog, "release_every", None)
            if every is None:
                continue
            if (
                isinstance(every, bool)
                or not isinstance(every, int | float)
                or not (math.isfinite(every) and every > 0)
            ):
                raise InvalidArgument(
                    f"cog {counters.name}: release_every must be a positive number of seconds "
                    f"or None, not {every!r}"
                )
            release = getattr(cog, "release", None)
            if not callable(release):
                raise InvalidArgument(
                    f"cog {counters.name}: release_every is {every!r} but it has no release()"
                )
            found[index] = float(every)
            self._release_fns[index] = release
        return found

    def _compile(self, bound: int) -> list[Stage]:
        n = len(self.cogs)
        stages = [Stage(None, None, 1, 0, n, bound)]
        for index, cog in enumerate(self.cogs):
            fn, limit = _unwrap(cog)
            self._fns.append(fn)
            if _is_async(fn) or _is_async_gen(fn):
                stages[-1].stop = index
                stages.append(Stage(index, fn, limit, index + 1, n, bound))
        sink = self.sink
        if sink is not None and (_is_async(sink) or _is_async_gen(sink)):
            fn, limit = _unwrap(sink)
            stages.append(Stage(n, fn, limit, n, n, bound))
        for before, after in itertools.pairwise(stages):
            before.next = after
        return stages

    @property
    def counters(self) -> TrainCounters:
        """Live counters of the whole train."""
        return TrainCounters(self)

    def in_flight(self) -> int:
        """How many items are inside the train now."""
        in_cogs = sum(c.in_flight for c in self.stats)
        in_inboxes = sum(len(s.inbox) + s.inbox.waiting for s in self.stages[1:])
        return in_cogs + in_inboxes + self.n_sunk - self.n_out - self.sink_failed

    def start(self, loop: asyncio.AbstractEventLoop, label: str) -> None:
        """Start the worker tasks of the async stages and the release timers on ``loop``."""
        self.clock = loop.time
        self._loop = loop
        for stage in self.stages[1:]:
            name = f"{label}:{cog_name(stage.fn)}"
            work = self._work if stage.index != len(self.cogs) else self._sink_work
            stage.workers = [loop.create_task(work(stage), name=name) for _ in range(stage.limit)]
        for index, every in self.release_every.items():
            self._timers[index] = timers.every(loop, every, self._tick, index)

    def tasks(self) -> list[asyncio.Task[None]]:
        """Every worker task, and the timed releases on their way."""
        workers = [task for stage in self.stages[1:] for task in stage.workers]
        return workers + list(self._releasing.values())

    def stop_timers(self) -> None:
        """Cancel every release timer (a release on its way is one of :meth:`tasks`)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def drop(self) -> int:
        """Count every item still in flight as dropped; return how many there were.

        For the end of a killed pipeline, once no worker runs any more: the
        items in inboxes, or being worked on by a cog or the sink, are
        abandoned, and counted as ``dropped`` (per cog too) so that none is
        lost silently.
        """
        dropped = 0
        for counters in self.stats:
            counters.dropped += counters.in_flight
            dropped += counters.in_flight
            counters.in_flight = 0
        for stage in self.stages[1:]:
            dropped += stage.inbox.drop()
        dropped += self.n_sunk - self.n_out - self.sink_failed
        self.n_sunk = self.n_out + self.sink_failed
        self.n_dropped += dropped
        return dropped

    # -- moving items -------------------------------------------------------------

    async def take(self, batch: list[Any]) -> None:
        """Run a batch from the supply through the first stage and pass it on."""
        self.n_in += len(batch)
        first = self.first
        items = self.through(0, first.stop, batch)
        if items:
            await self.emit(first, items)

    async def take_ids(self, batch: list[Any]) -> None:
        """:meth:`take`, each item first given the next id through the ``id_setter``.

        An item the setter raises on (or that finds the ids exhausted) is
        taken in and failed at once: counted, logged and given to the error
        sink like a cog's failure.
        """
        setter, ids = self.id_setter, self.ids
        assert setter is not None
        named: list[Any] = []
        failures: list[tuple[Any, Exception]] = []
        for item in batch:
            try:
                named.append(setter(item, next(ids)))
            except Exception as exc:
                failures.append((item, exc))
        if failures:
            self.n_in += len(failures)
            for item, error in failures:
                self.fail(len(self.cogs) + 1, item, error)
        if named:
            await self.take(named)

    async def emit(self, stage: Stage, items: list[Any]) -> None:
        """Hand what ``stage`` output to the next stage's inbox, or to the sink."""
        if stage.next is None:
            self.deliver(items)
        else:
            await stage.next.inbox.put_many(items)

    def through(self, start: int, stop: int, items: list[Any]) -> list[Any]:
        """Run ``items`` through the sync cogs ``start..stop-1``, a cog at a time.

        An input counts as swallowed when its output turned out empty (a lazy
        iterator or a generator is counted by what it produced); an input
        whose output raised part-way failed, and what it had output is dropped.
        """
        fns, stats, clock, fail = self._fns, self.stats, self.clock, self.fail
        for k in range(start, stop):
            if not items:
                break
            fn = fns[k]
            counters = stats[k]
            n = len(items)
            counters.n_in += n
            counters.in_flight += n  # the batch is the cog's until it is through
            out: list[Any] = []
            extend = out.extend
            swallowed = failures = 0
            began = clock()
            for item in items:
                try:
                    result = fn(item)
                except Exception as exc:
                    failures += 1
                    fail(k, item, exc)
                    continue
                if result.__class__ is tuple or result.__class__ is list:  # the fast path
                    if result:
                        extend(result)
                    else:
                        swallowed += 1
                elif result is None:
                    swallowed += 1
                else:  # any other iterable, lazy maybe: count what it produces
                    before = len(out)
                    try:
                        extend(result)
                    except Exception as exc:
                        del out[before:]  # a failed input outputs nothing
                        failures += 1
                        fail(k, item, exc)
                        continue
                    if len(out) == before:
                        swallowed += 1
            counters.seconds += clock() - began
            counters.n_out += len(out)
            counters.swallowed += swallowed
            counters.in_flight -= n - failures  # fail() took the failed ones out already
            items = out
        return items

    def deliver(self, items: list[Any]) -> None:
        """Give what the last cog output to a sync sink (or just count it)."""
        self.n_sunk += len(items)
        sink = self.sink
        if sink is None:
            self.n_out += len(items)
            return
        for item in items:
            try:
                sink(item)
            except Exception as exc:
                self.fail(len(self.cogs), item, exc)
            else:
                self.n_out += 1

    async def _work(self, stage: Stage) -> None:
        """One worker of an async cog's stage: take an item, await the cog, pass it on."""
        inbox, fn, agen, clock = stage.inbox, stage.fn, stage.agen, self.clock
        index = stage.index
        assert index is not None
        counters = self.stats[index]
        try:
            while True:
                item = await inbox.get()
                if item is END:
                    return
                counters.n_in += 1
                counters.in_flight += 1
                began = clock()
                try:
                    if agen:
                        outs = [x async for x in fn(item)]
                    else:
                        result = await fn(item)
                        outs = list(result) if result else []
                except Exception as exc:
                    counters.seconds += clock() - began
                    self.fail(index, item, exc)
                    continue
                counters.seconds += clock() - began
                counters.in_flight -= 1
                if not outs:
                    counters.swallowed += 1
                    continue
                counters.n_out += len(outs)
                outs = self.through(stage.first, stage.stop, outs)
                if outs:
                    await self.emit(stage, outs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, not a cog failure: end the pipeline with it
            self._crashed(exc)
            raise

    async def _sink_work(self, stage: Stage) -> None:
        """One worker of an async sink: take an item, await the sink."""
        inbox, fn, index = stage.inbox, stage.fn, len(self.cogs)
        try:
            while True:
                item = await inbox.get()
                if item is END:
                    return
                self.n_sunk += 1
                try:
                    if stage.agen:
                        async for _ in fn(item):
                            pass
                    else:
                        await fn(item)
                except Exception as exc:
                    self.fail(index, item, exc)
                else:
                    self.n_out += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, not a sink failure: end the pipeline with it
            self._crashed(exc)
            raise

    def _crashed(self, exc: BaseException) -> None:
        if self.on_crash is not None:
            self.on_crash(exc)

    def fail(self, index: int, item: Any, exc: BaseException) -> None:
        """Count a failed item, log it (rate-limited) and give it to the error sink.

        The item was in flight at cog ``index`` (or at the sink, for
        ``len(cogs)``); it no longer is. ``len(cogs) + 1`` is the
        ``id_setter``, which the item never got through. Failures of the error
        sink are logged with the item's id, rate-limited too.
        """
        n = len(self.stats)
        if index < n:
            counters = self.stats[index]
            counters.failed += 1
            counters.in_flight -= 1
            cog: Any = self.cogs[index]
        elif index == n:
            self.sink_failed += 1
            cog = self.sink
        else:
            self.id_failed += 1
            cog = self.id_setter
        try:
            item_id = self.id_getter(item)
        except Exception:
            item_id = default_id(item)
        self.logs[index].failed(self.owner, item_id, exc)
        if self.errors is not None:
            try:
                self.errors(item, exc, cog)
            except Exception as error:
                self.errors_log.failed(self.owner, item_id, error)

    def _label(self) -> str:
        return f"pipeline {self.owner.name} (pid {self.owner.pid})"

    # -- finishing ------------------------------------------------------------------

    async def finish(self, stage: Stage) -> None:
        """Call ``finish`` on the cogs of ``stage`` in order; flush what they return.

        A cog's release timer is stopped first, and a release on its way
        awaited: no release comes after ``finish``.
        """
        if stage.index is not None and stage.index < len(self.cogs):
            await self._finish(stage.index, stage)
        for index in range(stage.first, stage.stop):
            await self._finish(index, stage)

    async def _finish(self, index: int, stage: Stage) -> None:
        if index in self.release_every:
            timer = self._timers.pop(index, None)
            if timer is not None:
                timer.cancel()
            releasing = self._releasing.pop(index, None)
            if releasing is not None:
                await releasing
        finish = getattr(self.cogs[index], "finish", None)
        if not callable(finish):
            return
        counters = self.stats[index]
        try:
            result = finish()
            if inspect.isawaitable(result):
                result = await result
            items = list(result) if result else []
        except Exception:
            logger.exception(
                "%s: finish() of cog %s raised; the items it held are lost",
                self._label(),
                counters.name,
            )
            return
        await self._flush(index, stage, items)

    async def _flush(self, index: int, stage: Stage, items: list[Any]) -> None:
        """Pass what cog ``index`` output on its own (finish, release) down the train."""
        if items:
            counters = self.stats[index]
            counters.flushed += len(items)
            counters.n_out += len(items)
            items = self.through(max(index + 1, stage.first), stage.stop, items)
            if items:
                await self.emit(stage, items)

    # -- timed releases ---------------------------------------------------------------

    def _tick(self, index: int) -> bool:
        """A release timer's call: ``release(now)`` on cog ``index``; the timer goes on.

        A sync release that returns nothing (the usual tick: nothing is due
        yet) costs no task; what must be awaited (an async release, an inbox
        to put the items in) runs as a task, and the ticks that come while it
        is on its way are skipped, so releases never overlap.
        """
        releasing = self._releasing.get(index)
        if releasing is not None and not releasing.done():
            return True
        try:
            result = self._release_fns[index](self.clock())
        except Exception:
            self._release_failed(index)
            return True
        if result and self._loop is not None:
            name = f"{self.owner.name}:{self.stats[index].name}.release"
            self._releasing[index] = self._loop.create_task(
                self._release(index, result), name=name
            )
        return True

    async def _release(self, index: int, result: Any) -> None:
        try:
            if inspect.isawaitable(result):
                result = await result
            items = list(result) if result else []
        except Exception:
            self._release_failed(index)
            return
        await self._flush(index, self._stage_of[index], items)

    def _release_failed(self, index: int) -> None:
        logger.exception(
            "%s: release() of cog %s raised; its timer goes on",
            self._label(),
            self.stats[index].name,
        )

    def flush_logs(self) -> None:
        """Log the summaries of suppressed failure lines."""
        for log in (*self.logs, self.errors_log):
            log.flush(self.owner)


def _no_clock() -> float:
    return 0.0
