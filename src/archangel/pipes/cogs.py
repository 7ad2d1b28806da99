"""Cogs: the callables a :class:`~archangel.Pipeline` passes items through.

A cog takes one item and returns an iterable of 0..n items, or None to
swallow it (deadbeat's contract, structlog's processor chain with fan-out)::

    def parse(line):
        return (json.loads(line),)

Stateful cogs subclass :class:`Cog`, which adds :meth:`Cog.finish` (hand back
the items still held when the pipeline stops), :meth:`Cog.done` (release
resources), :meth:`Cog.release` (hand back held items on a timer, every
:attr:`Cog.release_every` seconds) and :attr:`Cog.pipeline` (the pipeline the
cog is in, to :meth:`~archangel.pipes.pipeline.Pipeline.notify` the other
cogs). Async cogs (``async def``) and async-generator cogs are allowed;
:func:`concurrent` lets an async cog work on several items at once.

Getters and setters keep cogs ignorant of the item's shape: a cog asks for
``getter``/``setter`` arguments and defaults them with :func:`itemgetter` and
:func:`itemsetter` (or :func:`attrgetter`/:func:`attrsetter`). A setter
returns the item, so immutable items (tuples, frozen dataclasses) work.
``id_getter`` arguments, defaulting to :func:`default_id`, name the item in
log lines.

This module holds the contract and small helpers only: no asyncio, no I/O.
Running cogs is :mod:`archangel.pipes.pipeline`'s job.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
import reprlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    MutableSequence,
)
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import InvalidArgument, ProcessStateError

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = [
    "Cog",
    "CogFunction",
    "Getter",
    "IdGetter",
    "Output",
    "Setter",
    "attrgetter",
    "attrsetter",
    "cog_name",
    "concurrent",
    "default_id",
    "itemgetter",
    "itemsetter",
    "keep",
    "mapper",
]

Output: TypeAlias = Iterable[Any] | None
"""What a sync cog returns: the items to pass on (any iterable), or None."""

CogFunction: TypeAlias = Callable[[Any], Output | Awaitable[Output] | AsyncIterator[Any]]
"""The cog contract: ``item -> Output``, ``async item -> Output``, or an async generator."""

Getter: TypeAlias = Callable[[Any], Any]
"""Reads one piece of an item: ``getter(item) -> piece``."""

Setter: TypeAlias = Callable[[Any, Any], Any]
"""Puts one piece into an item and returns the item: ``setter(item, piece) -> item``."""

IdGetter: TypeAlias = Callable[[Any], object]
"""Names an item in log lines: ``id_getter(item) -> id``."""

_MISSING: Any = object()
_reprs = reprlib.Repr()
_reprs.maxstring = 40
_reprs.maxother = 40


class Cog:
    """Base class for stateful cogs: adds :meth:`finish`, :meth:`done` and :meth:`release`.

    A subclass defines ``__call__(self, item)`` (sync, ``async def``, or an
    async generator) with the same contract as a plain cog. Save the
    ``__init__`` arguments under the same names: :meth:`__repr__` shows the
    public attributes, which you will appreciate in logs and in ``ps``.

    Any other public method is a possible *notification handler*: the
    pipeline's :meth:`~archangel.pipes.pipeline.Pipeline.notify` calls it by
    name (deadbeat's broadcasts, e.g. ``event_finished(event_id)``).

    Attributes:
        concurrency: For an async cog, how many items it may work on at once
            (default 1, which keeps the order of items). Ignored for sync cogs.
        release_every: Seconds between two calls of :meth:`release` while the
            pipeline runs, on the loop's clock; None (the default) arms no
            timer. Read once, when the pipeline is made.
    """

    concurrency: int = 1
    release_every: float | None = None
    _pipeline: Pipeline | None = None

    def finish(self) -> Output | Awaitable[Output]:
        """Return the items still held; the pipeline is stopping.

        Called once, in train order, after every item upstream has reached
        this cog; the items returned go through the rest of the train. After
        ``finish`` the cog receives no more items. May be ``async def``; if it
        raises, that is logged, the items it held are lost and the pipeline
        goes on.
        """
        return None

    def done(self) -> Awaitable[None] | None:
        """Release resources; called once on every cog after all have finished.

        Also called when the pipeline is killed, even if ``finish`` was not
        called (or was interrupted). May be ``async def``; if it raises, that
        is logged and the other cogs still get theirs.
        """
        return None

    def release(self, now: float) -> Output | Awaitable[Output]:
        """Return the held items whose time has come; called every :attr:`release_every` s.

        ``now`` is the loop's time of the call. The items returned go through
        the rest of the train, exactly as those :meth:`finish` returns (they
        are counted as ``flushed``). Calls never overlap, and none comes
        after :meth:`finish` has been called or once the pipeline was killed.
        May be ``async def``; if it raises, that is logged and the timer goes on.
        """
        return None

    def attach(self, pipeline: Pipeline) -> None:
        """Called by the :class:`~archangel.pipes.pipeline.Pipeline` made with this cog.

        Keeps the pipeline for :attr:`pipeline` and :meth:`notify`. A subclass
        that overrides it calls ``super().attach(pipeline)``. A cog belongs to
        one pipeline: made part of a second one, it refers to that one.
        """
        self._pipeline = pipeline

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this cog is in.

        Raises:
            ProcessStateError: No pipeline was made with this cog yet.
        """
        if self._pipeline is None:
            raise ProcessStateError(f"{self!r} is not in a pipeline yet: no pipeline to notify")
        return self._pipeline

    def notify(self, name: str, *args: Any) -> int:
        """``self.pipeline.notify(name, *args)``: broadcast to the cogs of its pipeline."""
        return self.pipeline.notify(name, *args)

    def __repr__(self) -> str:
        public = ", ".join(
            f"{key}={_reprs.repr(value)}"
            for key, value in vars(self).items()
            if not key.startswith("_")
        )
        return f"{type(self).__name__}({public})"


def cog_name(cog: object) -> str:
    """A short label for ``cog`` in logs and counters: its name or class name."""
    if isinstance(cog, _Concurrent):
        return cog_name(cog.cog)
    name = getattr(cog, "__qualname__", None) or getattr(cog, "__name__", None)
    if isinstance(name, str):
        return name.rsplit("<locals>.", 1)[-1]
    return type(cog).__name__


def _is_async(cog: object) -> bool:
    """True if ``cog`` is a coroutine function or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(cog) or inspect.iscoroutinefunction(
        getattr(cog, "__call__", None)  # noqa: B004 - the bound method is what matters
    )


def _is_async_gen(cog: object) -> bool:
    """True if ``cog`` is an async generator function (or its ``__call__`` is one)."""
    return inspect.isasyncgenfunction(cog) or inspect.isasyncgenfunction(
        getattr(cog, "__call__", None)  # noqa: B004
    )


class _Concurrent:
    """An async cog with a concurrency limit; made by :func:`concurrent`."""

    __slots__ = ("cog", "concurrency")

    def __init__(self, cog: CogFunction, concurrency: int) -> None:
        self.cog = cog
        self.concurrency = concurrency

    def __call__(self, item: Any) -> Any:
        return self.cog(item)

    def finish(self) -> Output | Awaitable[Output]:
        finish = getattr(self.cog, "finish", None)
        return finish() if callable(finish) else None

    def done(self) -> Awaitable[None] | None:
        done = getattr(self.cog, "done", None)
        return done() if callable(done) else None

    def __getattr__(self, name: str) -> Any:
        # Notification handlers, release and release_every are the wrapped cog's.
        if name == "cog":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.cog, name)

    def __repr__(self) -> str:
        return f"concurrent({self.cog!r}, limit={self.concurrency})"


def concurrent(cog: CogFunction, limit: int = 8) -> CogFunction:
    """Let an async cog work on up to ``limit`` items at once.

    The items it outputs may then come out in another order than they went
    in. ``finish`` and ``done`` of the wrapped cog are still called. Also
    works for an async ``sink``. Equivalent to a :class:`Cog` subclass
    setting :attr:`Cog.concurrency`.

    Raises:
        InvalidArgument: ``cog`` is not async, or ``limit`` is below 1.
    """
    if limit < 1:
        raise InvalidArgument(f"concurrent({cog!r}): limit must be >= 1, got {limit}")
    if not (_is_async(cog) or _is_async_gen(cog)):
        raise InvalidArgument(
            f"concurrent({cog!r}): only an async cog can run concurrently; "
            "a sync cog already runs inline"
        )
    return _Concurrent(cog, limit)


def _unwrap(cog: object) -> tuple[Any, int]:
    """The callable to run for ``cog`` and its concurrency limit."""
    if isinstance(cog, _Concurrent):
        return cog.cog, cog.concurrency
    limit = getattr(cog, "concurrency", 1)
    return cog, limit if isinstance(limit, int) and limit >= 1 else 1


# -- simple cogs -------------------------------------------------------------


def mapper(fn: Callable[[Any], Any]) -> CogFunction:
    """A one-to-one cog from a plain function: ``item -> (fn(item),)``."""

    def cog(item: Any) -> Output:
        return (fn(item),)

    cog.__name__ = cog.__qualname__ = f"mapper({cog_name(fn)})"
    return cog


def keep(predicate: Callable[[Any], object]) -> CogFunction:
    """A filter cog: passes the items for which ``predicate(item)`` is true."""

    def cog(item: Any) -> Output:
        return (item,) if predicate(item) else None

    cog.__name__ = cog.__qualname__ = f"keep({cog_name(predicate)})"
    return cog


# -- getters, setters, ids ---------------------------------------------------


def itemgetter(key: Any, default: Any = _MISSING) -> Getter:
    """A getter reading ``item[key]``; with ``default``, returned when it is missing.

    Without a default this is :func:`operator.itemgetter` (as fast as it gets).
    """
    if default is _MISSING:
        return operator.itemgetter(key)

    def get(item: Any) -> Any:
        try:
            return item[key]
        except (KeyError, IndexError):
            return default

    return get


def itemsetter(key: Any) -> Setter:
    """A setter putting a piece at ``item[key]`` and returning the item.

    Mutable mappings and sequences are changed in place; a tuple (a named
    tuple too) or a read-only mapping is copied with the piece replaced, so
    the setter's return value, not the original, is the item to pass on.
    """

    def set_item(item: Any, value: Any) -> Any:
        if isinstance(item, MutableMapping | MutableSequence):
            item[key] = value
            return item
        if isinstance(item, tuple):
            if isinstance(key, str) and hasattr(item, "_replace"):
                return item._replace(**{key: value})
            values = list(item)
            values[key] = value
            return type(item)(*values) if hasattr(item, "_fields") else tuple(values)
        if isinstance(item, Mapping):
            return {**item, key: value}
        raise TypeError(f"itemsetter({key!r}) cannot set a piece of {type(item).__name__}")

    return set_item


def attrgetter(name: str, default: Any = _MISSING) -> Getter:
    """A getter reading ``item.name``; with ``default``, returned when it is missing."""
    if default is _MISSING:
        return operator.attrgetter(name)

    def get(item: Any) -> Any:
        return getattr(item, name, default)

    return get


def attrsetter(name: str) -> Setter:
    """A setter putting a piece at ``item.name`` and returning the item.

    A frozen dataclass or a named tuple is copied with the attribute replaced
    (``dataclasses.replace``, ``_replace``); anything else is changed in place.
    """

    def set_attr(item: Any, value: Any) -> Any:
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            params = getattr(type(item), "__dataclass_params__", None)
            if params is not None and params.frozen:
                return dataclasses.replace(item, **{name: value})
        if isinstance(item, tuple) and hasattr(item, "_replace"):
            return item._replace(**{name: value})
        setattr(item, name, value)
        return item

    return set_attr


def default_id(item: Any) -> object:
    """The default ``id_getter``: ``item["id"]`` or ``item.id``, else a short repr."""
    if isinstance(item, Mapping):
        found = item.get("id", _MISSING)
    else:
        found = getattr(item, "id", _MISSING)
    if found is _MISSING or found is None:
        return _reprs.repr(item)
    return found
