"""What the console does about clients that guess tokens or flood its log.

:class:`Throttle` limits how fast one peer may have tokens checked (a token
bucket per peer address); :class:`Digest` turns a stream of warnings about
clients (bad tokens, refused sessions) into one line per interval. Both
live on the console's thread and are shared by the sessions of one console.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

__all__ = ["Digest", "Throttle"]


class Throttle:
    """At most ``burst`` token checks at once per peer, then ``rate`` per second.

    Each check takes one unit from its peer's bucket, which refills at
    ``rate`` units a second up to ``burst``; a check with no unit left waits
    for the next one, and one that would wait longer than ``max_wait`` is
    refused at once. Sessions waiting together queue up, so opening many
    connections does not check more tokens. A good token gives its unit
    back, so an operator never pays for having been let in.

    Args:
        burst: Checks allowed at once.
        rate: Checks per second after that.
        max_wait: The longest a check may wait for its turn.
        max_peers: Peers tracked; beyond that, new peers share one bucket
            (an attacker with many addresses is throttled as one).
    """

    _SHARED = "*"

    def __init__(
        self,
        burst: int = 5,
        rate: float = 1.0,
        max_wait: float = 5.0,
        max_peers: int = 1024,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.max_wait = max_wait
        self.max_peers = max_peers
        self._buckets: dict[str, tuple[float, float]] = {}  # peer: (units, when)

    def _level(self, peer: str, now: float) -> float:
        units, when = self._buckets.get(peer, (float(self.burst), now))
        return min(float(self.burst), units + (now - when) * self.rate)

    def _key(self, peer: str, now: float) -> str:
        if peer in self._buckets or len(self._buckets) < self.max_peers:
            return peer
        # Forget the peers whose buckets have refilled, then share one if still full.
        full = [p for p in self._buckets if self._level(p, now) >= self.burst]
        for p in full:
            del self._buckets[p]
        return peer if len(self._buckets) < self.max_peers else self._SHARED

    def reserve(self, peer: str) -> float | None:
        """Take a turn for a check from ``peer``.

        Returns:
            The seconds to wait before checking (0.0 for now), or None if
            the wait would be longer than ``max_wait``: refuse the attempt.
        """
        now = time.monotonic()
        key = self._key(peer, now)
        units = self._level(key, now) - 1.0
        if units < -self.max_wait * self.rate:
            return None
        self._buckets[key] = (units, now)
        return 0.0 if units >= 0 else -units / self.rate

    def refund(self, peer: str) -> None:
        """Give back the turn of a check that found a good token."""
        key = peer if peer in self._buckets else self._SHARED
        if key in self._buckets:
            now = time.monotonic()
            self._buckets[key] = (min(float(self.burst), self._level(key, now) + 1.0), now)

    def __len__(self) -> int:
        return len(self._buckets)


class Digest:
    """Warnings about clients, at most about one line per ``interval`` seconds.

    The first warning after a quiet interval is logged at once; the ones
    that follow within the interval are counted, by kind and peer, and
    logged as one summary line when it ends. So a client guessing tokens a
    thousand times a second costs the log two lines per interval, and the
    first one still shows up at once.

    Call :meth:`note` and :meth:`flush` on the console's loop.

    Args:
        logger: Where the lines go (at WARNING).
        interval: Seconds per summary.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._counts: collections.Counter[str] = collections.Counter()
        self._peers: dict[str, collections.Counter[str]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def note(self, what: str, peer: str) -> None:
        """A warning: ``what`` (``"bad token"``) happened with ``peer``."""
        if self._timer is None:
            self.logger.warning("console: %s from %s", what, peer)
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)
            return
        self._counts[what] += 1
        peers = self._peers.setdefault(what, collections.Counter())
        if peer in peers or len(peers) < 8:  # a few peers by name; the others counted
            peers[peer] += 1

    def _tick(self) -> None:
        self._timer = None
        if self.flush():  # busy: keep summing up for another interval
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def flush(self) -> bool:
        """Log the summary of what was counted, if anything; True if there was some."""
        if not self._counts:
            return False
        parts = []
        for what, count in self._counts.items():
            peers = self._peers.get(what, collections.Counter())
            named = ", ".join(f"{peer} x{n}" for peer, n in peers.most_common())
            others = count - sum(peers.values())
            if others:
                named += f", {others} from other peers"
            parts.append(f"{count} x {what} ({named})")
        self.logger.warning("console: in the last %g s, %s", self.interval, "; ".join(parts))
        self._counts.clear()
        self._peers.clear()
        return True

    def close(self) -> None:
        """Log what is still counted and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
