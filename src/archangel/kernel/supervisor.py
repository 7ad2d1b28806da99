"""``Supervisor``: OTP-style supervision of task processes.

A supervisor is itself a process (kind ``"supervisor"``) that starts its
children in order, restarts them when they exit as their restart type says,
and stops them in reverse order::

    supervisor = Supervisor(
        ChildSpec(poll_feed, name="feed"),
        ChildSpec(lambda: Pipeline(tail("app.log"), parse), name="parse"),
        strategy="rest_for_one", max_restarts=3, max_seconds=5,
    )
    manager.spawn(supervisor)

Children are specs: a factory called for every (re)start, which returns what
:meth:`ProcessManager.spawn` takes (a coroutine, or a task process such as a
pipeline or another supervisor). The semantics are Erlang/OTP's:

* restart types: ``permanent`` children are always restarted, ``transient``
  ones only after an abnormal exit (an error or a kill, not a normal return
  or a requested stop), ``temporary`` ones never;
* strategies: ``one_for_one`` restarts the child that exited,
  ``one_for_all`` stops the others (in reverse order) and starts all again
  (in order), ``rest_for_one`` does that for the children started after it;
* intensity: more than ``max_restarts`` restarts within any ``max_seconds``
  window (a sliding window, not a counter reset now and then) stops every
  child and ends the supervisor with :class:`RestartLimitExceeded`, so its
  own supervisor, or whoever awaits it, sees the failure;
* optional exponential backoff with jitter between restarts.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import InvalidArgument, ProcessStateError, RestartLimitExceeded, coerce_enum
from .manager import KILL_GRACE, _kill
from .process import _EXITED, ExitReason, Process
from .task import TaskProcess

__all__ = ["ChildSpec", "Restart", "RestartLimitExceeded", "Strategy", "Supervisor"]

logger = logging.getLogger(__name__)


class Restart(enum.StrEnum):
    """When a supervisor restarts a child that exited."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """After an abnormal exit only: an error or a kill."""
    TEMPORARY = "temporary"
    """Never; once it has exited, the child is gone from the supervisor."""


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one of them must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    """That child only."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped in reverse order, then all start in order."""
    REST_FOR_ONE = "rest_for_one"
    """That child and the children started after it."""


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    Args:
        factory: Called with no arguments at every (re)start; returns what
            :meth:`ProcessManager.spawn` takes: a coroutine (an async
            function works as the factory) or a :class:`TaskProcess`.
        name: The child's process name; by default the one ``spawn`` gives
            (a coroutine's function name, a task process's own name).
        restart: A :class:`Restart` or its value.
        shutdown: Seconds the child gets to end after ``stop()`` before it
            is killed.
    """

    factory: Callable[[], Any]
    name: str | None = None
    restart: Restart | str = Restart.PERMANENT
    shutdown: float = 5.0

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise InvalidArgument(f"ChildSpec factory {self.factory!r} is not callable")
        object.__setattr__(
            self, "restart", coerce_enum(Restart, self.restart, "ChildSpec restart")
        )
        if not self.shutdown >= 0:
            raise InvalidArgument(f"ChildSpec shutdown must be >= 0 s, got {self.shutdown!r}")


class _Stop:
    """The event ``on_stop`` puts in the supervisor's queue."""


_STOP = _Stop()


class Supervisor(TaskProcess):
    """A process that keeps its children running (OTP semantics).

    Args:
        children: :class:`ChildSpec` objects, or bare factories (permanent,
            5 s shutdown).
        strategy: A :class:`Strategy` or its value.
        max_restarts: At most this many restarts within ``max_seconds``;
            one more ends the supervisor with :class:`RestartLimitExceeded`.
        max_seconds: The length of that sliding window.
        backoff: Delay before the first restart of a burst, in seconds;
            each further restart within ``max_seconds`` doubles it, up to
            ``max_backoff``, less a random part of up to half of it (jitter,
            so restarted children do not move in lockstep). None restarts
            at once.
        max_backoff: The largest delay between restarts.
        name: The supervisor's process name.

    The supervisor runs its children in its own manager (the one that
    spawned it); each child's ``parent`` is the supervisor. ``stop()`` stops
    the children in reverse order, each within its spec's ``shutdown``
    time, then the supervisor; ``kill()`` kills them all at once.
    """

    kind = "supervisor"

    def __init__(
        self,
        *children: ChildSpec | Callable[[], Any],
        strategy: Strategy | str = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: float | None = None,
        max_backoff: float = 30.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.specs: tuple[ChildSpec, ...] = tuple(
            c if isinstance(c, ChildSpec) else ChildSpec(c) for c in children
        )
        self.strategy: Strategy = coerce_enum(Strategy, strategy, "strategy")
        if max_restarts < 0:
            raise InvalidArgument(f"max_restarts must be >= 0, got {max_restarts!r}")
        if not max_seconds > 0:
            raise InvalidArgument(f"max_seconds must be > 0, got {max_seconds!r}")
        if backoff is not None and not 0 <= backoff <= max_backoff:
            raise InvalidArgument(
                f"backoff must be between 0 and max_backoff ({max_backoff!r}), got {backoff!r}"
            )
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: How many restarts this supervisor has made in all.
        self.restarts = 0
        self._slots: list[Process | None] = [None] * len(self.specs)
        self._recent: collections.deque[float] = collections.deque()
        self._events: asyncio.Queue[tuple[int, Process | None] | _Stop] | None = None
        self._stopping = False

    @property
    def children(self) -> list[Process]:
        """The live children, in start order."""
        return [c for c in self._slots if c is not None and c.state is not _EXITED]

    def details(self) -> Mapping[str, Any]:
        """Strategy, live children and restarts so far, for ``ps``."""
        return {
            "strategy": self.strategy.value,
            "children": len(self.children),
            "restarts": self.restarts,
        }

    # -- the supervisor's own life ------------------------------------------

    def on_stop(self) -> None:
        """Stop the children in reverse order, then end (see :meth:`main`)."""
        self._stopping = True
        if self._events is None:  # not started yet, or already ended
            super().on_stop()
        else:
            self._events.put_nowait(_STOP)

    async def main(self) -> None:
        """Start the children, restart them as they exit, stop them when asked.

        Ends with :class:`RestartLimitExceeded` past the restart limit, and
        with whatever a factory raised if a child cannot be started at
        first. Either way, and when stopped, the children are stopped first,
        last started first; when killed, they are killed.
        """
        self._events = asyncio.Queue()
        everyone = range(len(self.specs))
        try:
            for index in everyone:
                self._start(index)
            while not self._stopping:
                event = await self._events.get()
                if not isinstance(event, _Stop):
                    await self._child_exited(*event)
        except asyncio.CancelledError:
            await self._kill_children(everyone)
            raise
        finally:
            # Also after an error: no child outlives its supervisor.
            await self._stop_children(everyone)
            self._events = None

    # -- children -------------------------------------------------------------

    def _start(self, index: int) -> Process:
        manager, events = self.manager, self._events
        if manager is None or events is None:
            raise ProcessStateError(f"{self!r} starts children only once spawned by a manager")
        spec = self.specs[index]
        child: Process = manager.spawn(spec.factory(), name=spec.name)
        child._archangel_parent = self
        child.at_exit(events.put_nowait, (index, child))
        self._slots[index] = child
        return child

    async def _child_exited(self, index: int, child: Process | None) -> None:
        """A child exited (``child``) or could not be restarted (None): apply the strategy."""
        if child is not None and self._slots[index] is not child:
            return  # one we stopped on purpose, or one already replaced
        self._slots[index] = None
        spec = self.specs[index]
        reason = child.exit_reason if child is not None else ExitReason.ERROR
        if spec.restart is Restart.TEMPORARY:
            return
        if spec.restart is Restart.TRANSIENT and reason in _CLEAN_EXITS:
            return
        if self._winding_down():
            return
        if child is None:
            what = f"child #{index} ({spec.name}) could not be restarted"
        else:
            what = f"pid {child.pid} ({child.name}) exited {reason.value if reason else ''}"
        delay = self._count_restart(what)
        if delay and not await self._sleep(delay):
            return
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = range(index, index + 1)
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = range(len(self.specs))
        else:
            group = range(index, len(self.specs))
        await self._stop_children(group)
        if self._winding_down():
            return
        names = ", ".join(self.specs[i].name or f"#{i}" for i in group)
        logger.info("%r restarts %s: %s", self, names, what)
        for i in group:
            if self.specs[i].restart is Restart.TEMPORARY:
                continue  # as in OTP: never restarted, not even with its siblings
            try:
                self._start(i)
            except Exception:
                logger.exception("%r could not restart child %d (%s)", self, i, self.specs[i].name)
                self._events.put_nowait((i, None))  # type: ignore[union-attr]

    def _winding_down(self) -> bool:
        """True once the supervisor or its manager is stopping: no more restarts."""
        return self._stopping or (self.manager is not None and self.manager.closed)

    def _count_restart(self, what: str) -> float:
        """Count one restart in the sliding window (raising past the limit); the delay."""
        now = asyncio.get_running_loop().time()
        recent = self._recent
        while recent and recent[0] <= now - self.max_seconds:
            recent.popleft()
        if len(recent) >= self.max_restarts:
            raise RestartLimitExceeded(
                f"{self!r}: more than {self.max_restarts} restarts in "
                f"{self.max_seconds:g} s (the last: {what})"
            )
        burst = len(recent)
        recent.append(now)
        self.restarts += 1
        if self.backoff is None:
            return 0.0
        delay = min(self.max_backoff, self.backoff * 2.0**burst)
        return delay - random.uniform(0, delay / 2)

    async def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False if the supervisor was asked to stop meanwhile."""
        events = self._events
        assert events is not None
        held: list[tuple[int, Process | None]] = []
        try:
            async with asyncio.timeout(delay):
                while True:
                    event = await events.get()
                    if isinstance(event, _Stop):
                        return False
                    held.append(event)  # other exits wait their turn
        except TimeoutError:
            return True
        finally:
            for event in held:
                events.put_nowait(event)

    async def _stop_children(self, indexes: Sequence[int]) -> None:
        """Stop the live children at ``indexes`` one at a time, the last first."""
        order = list(reversed(indexes))
        try:
            for index in order:
                child = self._slots[index]
                if child is None or child.state is _EXITED:
                    self._slots[index] = None
                    continue
                spec = self.specs[index]
                try:
                    async with asyncio.timeout(spec.shutdown):
                        await child.stop()
                except TimeoutError:
                    logger.warning(
                        "%r: pid %s (%s) still running %g s after stop(); killing it",
                        self,
                        child.pid,
                        child.name,
                        spec.shutdown,
                    )
                    _kill(child)
                    await _gone(child)
                except Exception:
                    # Its on_stop() failed: it must not outlive the supervisor,
                    # nor keep the children started before it running.
                    logger.exception(
                        "%r: stop() of pid %s (%s) raised; killing it", self, child.pid, child.name
                    )
                    _kill(child)
                    await _gone(child)
                self._slots[index] = None
        except asyncio.CancelledError:
            await self._kill_children(order)
            raise

    async def _kill_children(self, indexes: Sequence[int]) -> None:
        """Kill the live children at ``indexes`` at once; wait (bounded) until they are gone."""
        children = []
        for index in indexes:
            child, self._slots[index] = self._slots[index], None
            if child is not None and child.state is not _EXITED:
                _kill(child)
                children.append(child)
        for child in children:
            await _gone(child)


_CLEAN_EXITS = (ExitReason.NORMAL, ExitReason.SHUTDOWN)


async def _gone(child: Process) -> None:
    """Wait for a killed child to exit, at most ``KILL_GRACE`` seconds."""
    try:
        async with asyncio.timeout(KILL_GRACE):
            await child.wait()
    except TimeoutError:
        logger.error("pid %s did not exit %g s after kill()", child.pid, KILL_GRACE)
