"""The console's bridge to the app's event loop: hand-offs, lag probe, samples.

The console runs on its own thread and loop. Everything here is called on
the console's loop, except the small callbacks handed to the app's loop with
``call_soon_threadsafe``. Nothing here blocks the app's loop: a hand-off is
one callback, the lag probe is one callback every half second.

What this is not: it never touches the manager's tables from the console
thread (commands read thread-safe snapshots themselves), and it does not
format anything (see :mod:`archangel.console.render`).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple

from ..kernel.manager import ProcessManager

__all__ = ["AppLoop", "Outcome", "Status"]

logger = logging.getLogger(__name__)

# The lag probe measures another thread's loop from the console thread, so it
# uses the process-wide monotonic clock rather than either loop's ``time()``.
_monotonic = time.monotonic


class Status(enum.Enum):
    """How a hand-off to the app's loop went."""

    DONE = "done"
    """It ran; :attr:`Outcome.value` holds the result."""
    FAILED = "failed"
    """It ran and raised; :attr:`Outcome.error` holds the exception."""
    QUEUED = "queued"
    """The app's loop did not start it in time (blocked); it runs when free."""
    RUNNING = "running"
    """It started but had not finished in time; it goes on in the background."""
    CLOSED = "closed"
    """The app's loop is closed, so nothing was handed over."""


class Outcome(NamedTuple):
    """The result of :meth:`AppLoop.run`."""

    status: Status
    value: Any = None
    error: BaseException | None = None


class _Sample(NamedTuple):
    when: float
    started: int
    exited: int


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any) -> None:
    """From the app's thread: complete ``future`` on the console's loop, if it still runs."""
    try:
        loop.call_soon_threadsafe(_set_result, future, value)
    except RuntimeError:  # the console's loop is closed: nobody is waiting any more
        pass


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class AppLoop:
    """The app's loop as seen from the console's thread.

    Args:
        loop: The app's event loop.
        manager: The manager whose counters are sampled for rates.
        thread_id: The app loop's thread id, if known (it is learnt from the
            lag probe otherwise).
        probe_interval: Seconds between lag probes and counter samples.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        manager: ProcessManager,
        *,
        thread_id: int | None = None,
        probe_interval: float = 0.5,
    ) -> None:
        self.loop = loop
        self.manager = manager
        self.thread_id = thread_id
        self.probe_interval = probe_interval
        #: (sent, lag) pairs of answered probes, newest last (about two minutes).
        self.lags: collections.deque[tuple[float, float]] = collections.deque(maxlen=240)
        self._outstanding: float | None = None
        self._samples: collections.deque[_Sample] = collections.deque(maxlen=130)
        self._closed = False
        self._pending: set[asyncio.Future[Any]] = set()

    # -- hand-offs -------------------------------------------------------------

    async def run(
        self,
        fn: Callable[[], Any],
        *,
        start_timeout: float = 1.0,
        finish_timeout: float = 5.0,
    ) -> Outcome:
        """Call ``fn()`` on the app's loop thread and wait a bounded time for it.

        If ``fn()`` returns an awaitable, it is awaited on the app's loop. The
        wait is in two parts: up to ``start_timeout`` seconds for the app's
        loop to pick the call up (longer means it is blocked, and the call
        stays queued), then up to ``finish_timeout`` for it to finish. Never
        raises for what ``fn`` does: see :class:`Outcome`.
        """
        console_loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = console_loop.create_future()
        finished: asyncio.Future[tuple[Any, BaseException | None]] = console_loop.create_future()
        try:
            self.loop.call_soon_threadsafe(self._start, fn, console_loop, started, finished)
        except RuntimeError:
            return Outcome(Status.CLOSED)
        if not await self._wait(started, start_timeout):
            return Outcome(Status.QUEUED)
        if not await self._wait(finished, finish_timeout):
            return Outcome(Status.RUNNING)
        value, error = finished.result()
        if error is not None:
            return Outcome(Status.FAILED, error=error)
        return Outcome(Status.DONE, value)

    @staticmethod
    async def _wait(future: asyncio.Future[Any], timeout: float) -> bool:
        done, _ = await asyncio.wait({future}, timeout=timeout)
        return bool(done)

    def _start(
        self,
        fn: Callable[[], Any],
        console_loop: asyncio.AbstractEventLoop,
        started: asyncio.Future[None],
        finished: asyncio.Future[tuple[Any, BaseException | None]],
    ) -> None:
        # Runs on the app's loop thread.
        _resolve(console_loop, started, None)
        try:
            result = fn()
        except Exception as exc:
            logger.info("console action %r raised %r", fn, exc)
            _resolve(console_loop, finished, (None, exc))
            return
        if not inspect.isawaitable(result):
            _resolve(console_loop, finished, (result, None))
            return
        task = asyncio.ensure_future(result)
        self._pending.add(task)

        def done(task: asyncio.Future[Any]) -> None:
            self._pending.discard(task)
            if task.cancelled():
                _resolve(console_loop, finished, (None, asyncio.CancelledError()))
            elif task.exception() is not None:
                logger.info("console action %r raised %r", fn, task.exception())
                _resolve(console_loop, finished, (None, task.exception()))
            else:
                _resolve(console_loop, finished, (task.result(), None))

        task.add_done_callback(done)

    # -- lag probe and counter samples (console's loop) ----------------------------

    async def watch(self) -> None:
        """Probe the app loop's lag and sample counters until cancelled."""
        while not self._closed:
            self.probe()
            self.sample()
            await asyncio.sleep(self.probe_interval)

    def probe(self) -> None:
        """Send one lag probe unless one is still outstanding."""
        if self._outstanding is not None:
            return
        sent = self._outstanding = _monotonic()
        try:
            self.loop.call_soon_threadsafe(self._answer, sent)
        except RuntimeError:  # the app's loop is closed
            self._closed = True

    def _answer(self, sent: float) -> None:
        # Runs on the app's loop thread: two assignments and an append.
        self.lags.append((sent, _monotonic() - sent))
        self.thread_id = threading.get_ident()
        self._outstanding = None

    def sample(self) -> None:
        """Record the manager's started/exited totals for :meth:`rates`."""
        counters = self.manager.counters
        self._samples.append(_Sample(_monotonic(), counters["started"], counters["exited"]))

    @property
    def blocked_for(self) -> float:
        """Seconds the outstanding probe has waited (0.0 when none is waiting)."""
        sent = self._outstanding
        return 0.0 if sent is None else _monotonic() - sent

    def lag_stats(self, window: float) -> tuple[float, float, int]:
        """(max, mean, count) of the probe lags answered in the last ``window`` s."""
        since = _monotonic() - window
        recent = [lag for sent, lag in list(self.lags) if sent >= since]
        if not recent:
            return 0.0, 0.0, 0
        return max(recent), sum(recent) / len(recent), len(recent)

    def rates(self, window: float) -> tuple[float, float] | None:
        """(started/s, exited/s) over about the last ``window`` seconds, if known."""
        samples = list(self._samples)
        if len(samples) < 2:
            return None
        last = samples[-1]
        first = samples[0]
        for sample in samples:
            if last.when - sample.when <= window + self.probe_interval / 2:
                first = sample
                break
        span = last.when - first.when
        if span <= 0:
            return None
        return (last.started - first.started) / span, (last.exited - first.exited) / span

    # -- the loop thread's stack -----------------------------------------------------

    def frame(self) -> FrameType | None:
        """The app loop thread's current frame, or None if the thread is unknown."""
        if self.thread_id is None:
            return None
        return sys._current_frames().get(self.thread_id)

    def close(self) -> None:
        """Stop probing (the watch task ends at its next tick)."""
        self._closed = True
