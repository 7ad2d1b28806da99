"""``LoopWatch``: the app loop's lag, seen from the web's thread, and the blocked-loop warning.

The probe itself is the console's (:class:`archangel.console.apploop.AppLoop`):
one callback handed to the app's loop every ``probe_interval`` seconds, which
records how late it ran. This module drives it from the web's own loop and
reads what it recorded:

* every answered probe is observed into a histogram (the app's loop does
  nothing more than the probe's own two assignments and an append);
* when the outstanding probe has waited longer than ``block_threshold``,
  one warning is logged with the stack of the app loop's thread (walked by
  :func:`archangel.kernel.frames.thread_frames`, formatted as the console's
  ``stack``), and once the loop answers again, one line with how long it
  was blocked. A block is reported once, however long it lasts.

Nothing here raises into the app: it all runs on the web's loop, and a
failure of one tick is logged and the next tick goes on. What this is not:
it serves nothing and formats no metrics (see :mod:`archangel.web.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..console.apploop import AppLoop
from ..console.render import format_ms, format_stack
from ..kernel.frames import thread_frames

__all__ = ["LoopWatch"]

logger = logging.getLogger(__name__)

# The probe measures another thread's loop, so both sides use the
# process-wide monotonic clock, as the console's probe does.
_monotonic = time.monotonic

#: Frames of the blocking stack shown in the warning (innermost kept).
_STACK_LIMIT = 30


class LoopWatch:
    """Drive the lag probe of ``apploop`` and report a blocked app loop.

    Args:
        apploop: The console's bridge to the app's loop (its lag probe).
        block_threshold: Seconds without an answer after which the loop is
            reported blocked (a warning with the stack); None for no warning.
        observe: Called with every answered probe's lag, in seconds, on the
            web's thread (the metrics' histogram).
    """

    def __init__(
        self,
        apploop: AppLoop,
        block_threshold: float | None = 1.0,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.apploop = apploop
        self.block_threshold = block_threshold
        #: Called with each answered probe's lag (the web server sets its histogram here).
        self.observe = observe
        #: Blocks reported (warnings logged) so far.
        self.blocks = 0
        #: ``_monotonic()`` of the last tick: the web side is alive while it moves.
        self.heartbeat = _monotonic()
        self._seen = 0.0  # ``sent`` of the newest probe answer observed
        self._warned: float | None = None  # how long it was blocked when the warning went

    def __repr__(self) -> str:
        state = "blocked" if self._warned is not None else "answering"
        return f"<LoopWatch lag probe every {self.apploop.probe_interval:g} s [{state}]>"

    @property
    def tick_interval(self) -> float:
        """Seconds between ticks, a fifth of the threshold (at most the probe interval)."""
        interval = self.apploop.probe_interval
        if self.block_threshold is not None:
            interval = min(interval, self.block_threshold / 5)
        return max(interval, 0.01)

    async def run(self) -> None:
        """Tick until cancelled: probe, observe the answers, report a block."""
        last_probe = 0.0
        while True:
            now = _monotonic()
            self.heartbeat = now
            try:
                if now - last_probe >= self.apploop.probe_interval:
                    self.apploop.probe()  # no-op while one is outstanding
                    last_probe = now
                self.tick()
            except Exception:  # never let one bad tick end the watch
                logger.exception("%r: a tick of the lag watch failed", self)
            await asyncio.sleep(self.tick_interval)

    def tick(self) -> None:
        """Observe the probe answers since the last tick; report a block begun or ended."""
        fresh = []
        for sent, lag in reversed(list(self.apploop.lags)):
            if sent <= self._seen:
                break
            fresh.append((sent, lag))
        if fresh:
            self._seen = fresh[0][0]
        if self.observe is not None:
            for _, lag in reversed(fresh):
                self.observe(lag)
        if self._warned is not None:
            if fresh:
                # Probes are sent one at a time: the first answer after the warning
                # is the probe that was waiting, and its lag is the block's length.
                logger.warning(
                    "the app loop answers again: it was blocked for %s", format_ms(fresh[-1][1])
                )
                self._warned = None
            return
        threshold = self.block_threshold
        blocked = self.apploop.blocked_for
        if threshold is not None and blocked > threshold:
            self._warned = blocked
            self.blocks += 1
            logger.warning("%s", self.blocked_report(blocked))

    def blocked_report(self, blocked: float) -> str:
        """The warning text: how long the loop has been blocked and where it is."""
        head = f"the app loop is blocked: no answer for {format_ms(blocked)}"
        thread_id = self.apploop.thread_id
        frames = thread_frames(thread_id) if thread_id is not None else []
        if not frames:
            return head + " (its thread's stack is not known)"
        return f"{head}; app loop thread {thread_id}, innermost call last:\n" + format_stack(
            frames, _STACK_LIMIT
        )
