"""Plumbing for pipelines: a stage's bounded inbox and a rate-limited failure log.

An inbox is not one of the bus's channels (:mod:`archangel.bus.channels`):
it is the FIFO between two stages of one train. Private: the train
(:mod:`archangel.pipes.train`) uses these; neither is part of the public API.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

__all__ = ["END", "FailureLog", "Inbox"]

logger = logging.getLogger("archangel.pipes.pipeline")  # one logger for the pipeline

#: What :meth:`Inbox.get` returns once the inbox is closed and empty.
END: Any = object()


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)
    waiters.clear()


class Inbox:
    """A bounded FIFO between pipeline stages: batches in, items out.

    ``put_many`` appends what fits and waits for room for the rest (that is
    the back-pressure); items it still holds are counted in :attr:`waiting`,
    so ``len(inbox) + inbox.waiting`` is everything on its way through
    (until :meth:`drop` empties the inbox).
    ``len(inbox)`` never exceeds :attr:`bound`. Producers are woken once the
    inbox is half empty, so a slow consumer does not ping-pong with them.
    """

    __slots__ = ("_getters", "_items", "_putters", "bound", "closed", "waiting")

    def __init__(self, bound: int) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._getters: list[asyncio.Future[None]] = []
        self._putters: list[asyncio.Future[None]] = []
        self.bound = bound
        self.waiting = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Inbox {len(self._items)}/{self.bound} waiting={self.waiting} [{state}]>"

    async def put_many(self, items: list[Any]) -> None:
        """Append ``items`` in order, waiting for room as needed.

        If cancelled while waiting, the items not appended yet stay counted
        in :attr:`waiting`: they are not lost silently, :meth:`drop` counts
        them.
        """
        total = len(items)
        moved = 0
        self.waiting += total
        while True:
            room = self.bound - len(self._items)
            if room > 0:
                chunk = items if moved == 0 and total <= room else items[moved : moved + room]
                self._items.extend(chunk)
                moved += len(chunk)
                self.waiting -= len(chunk)
                if self._getters:
                    _wake(self._getters)
                if moved == total:
                    return
            future = asyncio.get_running_loop().create_future()
            self._putters.append(future)
            try:
                await future
            finally:
                if not future.done():
                    future.cancel()

    async def get(self) -> Any:
        """The next item; :data:`END` once the inbox is closed and empty."""
        items = self._items
        while not items:
            if self.closed:
                return END
            future = asyncio.get_running_loop().create_future()
            self._getters.append(future)
            try:
                await future
            finally:
                if not future.done():
                    future.cancel()
        item = items.popleft()
        if self._putters and len(items) <= self.bound // 2:
            _wake(self._putters)
        return item

    def close(self) -> None:
        """No more items will come: getters drain what is left, then get :data:`END`."""
        self.closed = True
        _wake(self._getters)

    def drop(self) -> int:
        """Empty the inbox; return how many items it held or was waiting to take.

        For its owner, once no producer or consumer uses it any more (the
        pipeline was killed): what is returned is what the kill abandoned.
        """
        dropped = len(self._items) + self.waiting
        self._items.clear()
        self.waiting = 0
        return dropped


class FailureLog:
    """Logs failures of one cog, at most ``limit`` lines per second.

    Failures beyond the limit are counted and summarised in one line
    ("suppressed K") when their second (:attr:`period`) is over, or when the
    pipeline ends (:meth:`flush`). Time is the loop's clock.
    """

    __slots__ = ("_timer", "count", "label", "limit", "suppressed", "window")

    #: The window, in seconds, that ``limit`` lines are allowed in.
    period = 1.0

    def __init__(self, label: str, limit: int) -> None:
        self.label = label
        self.limit = limit
        self.window = float("-inf")
        self.count = 0
        self.suppressed = 0
        self._timer: asyncio.TimerHandle | None = None

    def failed(self, owner: Any, item_id: object, exc: BaseException) -> None:
        """Log (or count) that this cog raised ``exc`` on the item ``item_id``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self.window + self.period:
            self.flush(owner)
            self.window = now
            self.count = 0
        if self.count < self.limit:
            self.count += 1
            logger.error(
                "%s: %s of pipeline %s (pid %s) raised %r",
                item_id,
                self.label,
                owner.name,
                owner.pid,
                exc,
                exc_info=exc,
            )
            return
        self.suppressed += 1
        if self._timer is None:
            self._timer = loop.call_at(self.window + self.period, self.flush, owner)

    def flush(self, owner: Any) -> None:
        """Log the summary of suppressed lines, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.suppressed:
            logger.error(
                "%s of pipeline %s (pid %s): suppressed %d more failure lines",
                self.label,
                owner.name,
                owner.pid,
                self.suppressed,
            )
            self.suppressed = 0
