"""Broadcasts to the parts of a train by method name (deadbeat's ``Train.notify``).

Private: :meth:`archangel.pipes.pipeline.Pipeline.notify` is the public face.
A :class:`Broadcast` finds, per name, the parts (supply, cogs, sink) that have
a method of that name, calls them in train order, and logs and counts the
handlers that raise, rate-limited as cogs' failures are. No asyncio here but
the failure log's clock.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidArgument
from .cogs import IdGetter, default_id
from .inbox import FailureLog

__all__ = ["RESERVED_NOTIFICATIONS", "Broadcast"]

logger = logging.getLogger("archangel.pipes.pipeline")  # one logger for the pipeline

#: Names a broadcast refuses: the methods the pipeline itself calls on cogs
#: and supplies, which a broadcast must not trigger out of turn.
RESERVED_NOTIFICATIONS = frozenset(
    {"attach", "batches", "close", "done", "finish", "notify", "release", "release_every"}
)


class Broadcast:
    """The notification handlers of one pipeline's parts, found by name on first use.

    Args:
        owner: The pipeline (its ``name`` and ``pid`` are read for log lines).
        parts: ``(label, part)`` in train order: ``"supply X"``, ``"cog Y"``, ``"sink Z"``.
        id_getter: Names the first argument in log lines when it is not a str or int.
        log_rate: Failure log lines per second per handler.
    """

    __slots__ = ("_handlers", "_id_getter", "_log_rate", "_logs", "_owner", "_parts", "failed")

    def __init__(
        self,
        owner: Any,
        parts: Sequence[tuple[str, object]],
        id_getter: IdGetter,
        log_rate: int,
    ) -> None:
        self._owner = owner
        self._parts = tuple(parts)
        self._id_getter = id_getter
        self._log_rate = log_rate
        self._handlers: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
        self._logs: dict[tuple[str, str], FailureLog] = {}
        #: How many handlers raised (or were async), over every name.
        self.failed = 0

    def handlers(self, name: str) -> list[tuple[str, Callable[..., Any]]]:
        """``(label, method)`` of every part with a method ``name``, in train order.

        Raises:
            InvalidArgument: ``name`` is not a public method name, or is reserved.
        """
        found = self._handlers.get(name)
        if found is None:
            found = self._handlers[name] = self._find(name)
        return found

    def _find(self, name: str) -> list[tuple[str, Callable[..., Any]]]:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise InvalidArgument(
                f"{self._owner!r}: cannot notify {name!r}: not a public method name"
            )
        if name in RESERVED_NOTIFICATIONS:
            raise InvalidArgument(
                f"{self._owner!r}: cannot notify {name!r}: the pipeline calls that method itself"
            )
        found = []
        for label, part in self._parts:
            handler = getattr(part, name, None)
            if callable(handler):
                found.append((label, handler))
        return found

    def send(self, name: str, args: tuple[Any, ...]) -> int:
        """Call every handler of ``name`` with ``args``; return how many did not raise."""
        called = 0
        for label, handler in self.handlers(name):
            try:
                result = handler(*args)
            except Exception as exc:
                self._failure(name, label, args, exc)
                continue
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if callable(close):
                    close()  # never awaited: no "never awaited" warning either
                error = TypeError(f"{name}() of {label} is async: notification handlers are sync")
                self._failure(name, label, args, error)
                continue
            called += 1
        return called

    def _failure(self, name: str, label: str, args: tuple[Any, ...], exc: Exception) -> None:
        self.failed += 1
        first = args[0] if args else name
        if not isinstance(first, str | int):
            try:
                first = self._id_getter(first)
            except Exception:
                first = default_id(first)
        log = self._logs.get((name, label))
        if log is None:
            log = self._logs[name, label] = FailureLog(f"{name}() of {label}", self._log_rate)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # notified from outside the loop: no rate to keep on its clock
            owner = self._owner
            logger.error(
                "%s: %s() of %s of pipeline %s (pid %s) raised %r",
                *(first, name, label, owner.name, owner.pid, exc),
                exc_info=exc,
            )
            return
        log.failed(self._owner, first, exc)

    def flush(self) -> None:
        """Log the summaries of suppressed failure lines."""
        for log in self._logs.values():
            log.flush(self._owner)
