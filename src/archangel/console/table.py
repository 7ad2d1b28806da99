"""The console's session table: slots, making room, idle timeouts, memory given back.

A :class:`SessionTable` lives on the console's thread. A slot is taken when
a connection's protocol is created and freed when its socket is closed for
good (after the lingering close of :mod:`~archangel.console.protocol`), so
what the console holds for its clients is bounded by ``max_sessions``.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable

from .protocol import ConsoleProtocol
from .session import Limits

__all__ = ["MAKE_ROOM_IDLE", "SessionTable"]

logger = logging.getLogger("archangel.console.server")

#: Seconds between two looks for sessions past their idle timeout.
_SWEEP_INTERVAL = 1.0
#: Seconds an unauthenticated session must have been idle to be pushed out for a
#: new one: so a flood of new connections cannot push out a session just opened.
MAKE_ROOM_IDLE = 5.0
#: Seconds after the last session ended before the C allocator is asked to give
#: memory back, and the least between two such requests.
_TRIM_AFTER = 1.0
_TRIM_EVERY = 10.0


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class SessionTable:
    """The slots of one console's sessions.

    Args:
        limits: ``max_sessions`` and ``idle_timeout`` are read from it.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        #: Slots taken, from a protocol's creation until its socket is closed.
        self.taken = 0
        #: Protocols given their connection, and holding a slot.
        self.open: set[ConsoleProtocol] = set()
        #: How many times memory was given back to the system.
        self.trims = 0
        self._trim = _malloc_trim()
        self._trim_timer: asyncio.TimerHandle | None = None
        self._last_trim = 0.0

    def admit(self) -> bool:
        """Take a slot for a new connection, making room if need be; False if full."""
        if self.taken >= self.limits.max_sessions and not self.make_room():
            return False
        self.taken += 1
        return True

    def opened(self, protocol: ConsoleProtocol) -> None:
        """``protocol`` has its connection (and still its slot)."""
        self.open.add(protocol)

    def released(self, protocol: ConsoleProtocol) -> None:
        """``protocol``'s socket is closed: its slot is free."""
        self.taken -= 1
        self.open.discard(protocol)
        self._schedule_trim()

    def make_room(self) -> bool:
        """Free a slot for a new session; False if none may go.

        What may go, once idle for :data:`MAKE_ROOM_IDLE` seconds: a
        connection whose session is over but whose client does not take the
        rest of its output, first, then the idlest session not authenticated
        yet (no token sent; on a console without a token, no line entered).
        Authenticated sessions are never pushed out: they go when they are
        idle for ``idle_timeout``.
        """
        candidates = [
            (p.ended, p.session.idle, p)
            for p in self.open
            if p.session is not None and (p.ended or not p.session.authenticated)
        ]
        candidates = [c for c in candidates if c[1] >= MAKE_ROOM_IDLE]
        if not candidates:
            return False
        ended, _, victim = max(candidates, key=lambda c: (c[0], c[1]))
        if not ended:
            logger.info(
                "console: closed idle unauthenticated session %s for a new one", victim.peer
            )
        victim.end("\nclosed to make room for another session\n", abort=True)
        return True

    async def sweep(self) -> None:
        """Close the sessions idle for longer than ``idle_timeout``, until cancelled."""
        timeout = self.limits.idle_timeout
        if timeout is None:
            return
        while True:
            await asyncio.sleep(min(_SWEEP_INTERVAL, timeout / 2))
            self._close_idle(timeout)  # not inline: its locals would keep a protocol alive

    def _close_idle(self, timeout: float) -> None:
        for protocol in list(self.open):
            session = protocol.session
            if session is not None and not protocol.ended and session.idle > timeout:
                logger.info("console: session %s idle for %g s: closed", protocol.peer, timeout)
                protocol.end(f"\nidle for {timeout:g} s: disconnected\n")

    # -- giving memory back ---------------------------------------------------------

    def _schedule_trim(self) -> None:
        # The replies of sessions that ended are freed, but glibc keeps much of
        # what it freed for reuse: 40 clients that hung up in the middle of
        # ``ps --json`` left the process 60 MB larger for good. Once sessions
        # stop ending, the console asks for it back (malloc_trim, a few ms on
        # this thread, with the GIL released), at most every _TRIM_EVERY s.
        if self._trim is None:
            return
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        delay = max(_TRIM_AFTER, self._last_trim + _TRIM_EVERY - time.monotonic())
        self._trim_timer = asyncio.get_running_loop().call_later(delay, self._give_back)

    def _give_back(self) -> None:
        self._trim_timer = None
        if self._trim is not None:
            self._last_trim = time.monotonic()
            self._trim()
            self.trims += 1

    def close(self) -> None:
        """Stop the timer (the console is closing)."""
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None
