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

Children are specs (:mod:`archangel.kernel.childspec`): a factory called for
every (re)start, which returns what :meth:`~archangel.ProcessManager.spawn` takes (a
coroutine, or a task process such as a pipeline or another supervisor), or
:data:`IGNORE`. The semantics are Erlang/OTP's:

* restart types: ``permanent`` children are always restarted, ``transient``
  ones only after an abnormal exit (an error or a kill, not a normal return
  or a requested stop), ``temporary`` ones never;
* strategies: ``one_for_one`` restarts the child that exited,
  ``one_for_all`` stops the others (in reverse order) and starts all again
  (in order), ``rest_for_one`` does that for the children started after it;
* intensity: more than ``max_restarts`` restarts within any ``max_seconds``
  window (a sliding window, not a counter reset now and then) stops every
  child and ends the supervisor with :class:`RestartLimitExceeded`, so its
  own supervisor, or whoever awaits it, sees the failure; a top-level one
  stops the App (``on_give_up``);
* children at run time: ``start_child``, ``terminate_child``,
  ``restart_child``, ``delete_child``, and template supervisors (OTP's
  ``simple_one_for_one``) whose children all come from one spec;
* optional exponential backoff with jitter between restarts.

Every change to the children happens in the supervisor's own task, one at a
time, as in OTP: the run-time calls are requests it serves in turn with the
exits of its children.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import (
    DuplicateChild,
    InvalidArgument,
    ProcessStateError,
    RestartLimitExceeded,
    check_number,
    coerce_enum,
)
from ._children import Child, find, kill_children, stop_children
from .childspec import IGNORE, ChildSpec, Restart, Strategy
from .process import _RUNNING, ExitReason, Process
from .task import TaskProcess

__all__ = [
    "IGNORE",
    "ChildSpec",
    "Restart",
    "RestartLimitExceeded",
    "Strategy",
    "Supervisor",
]

logger = logging.getLogger(__name__)


class _Phase(enum.Enum):
    """The supervisor's own life, beside its process state."""

    IDLE = "idle"  # spawned (or not yet), main() not entered: requests wait in the queue
    SUPERVISING = "supervising"
    STOPPING = "stopping"
    ENDED = "ended"


class _Stop:
    """The event ``on_stop`` puts in the supervisor's queue."""


_STOP = _Stop()


class _Request:
    """A run-time call (``start_child``...) waiting for the supervisor's task."""

    __slots__ = ("args", "future", "operation")

    def __init__(self, operation: str, args: tuple[Any, ...], future: asyncio.Future[Any]):
        self.operation = operation
        self.args = args
        self.future = future


_Event = tuple[Child, Process | None] | _Request | _Stop


class Supervisor(TaskProcess):
    """A process that keeps its children running (OTP semantics).

    Args:
        children: :class:`ChildSpec` objects, or bare factories (permanent,
            5 s shutdown). Their ids (:attr:`ChildSpec.id`) must differ.
        template: Instead of ``children``: the one spec every child is
            started from (OTP's ``simple_one_for_one``). The supervisor
            starts with no child; ``start_child(*args, **kwargs)`` starts
            one with ``template.factory(*args, **kwargs)``, and its restarts
            call it with the same arguments.
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
        on_give_up: What a top-level supervisor (one without a parent)
            does when it gives up, that is ends with an error (its restart
            limit exceeded, or a child that cannot be started at first):
            ``"stop"`` (the default) calls its manager's
            :attr:`~ProcessManager.give_up_handler`, with which an
            :class:`~archangel.App` stops with exit status 1; ``"ignore"``
            only ends the supervisor; a callable is called with the
            supervisor and its error. A supervisor under another one always
            leaves that to its parent.

    The supervisor runs its children in its own manager (the one that
    spawned it); each child's ``parent`` is the supervisor. ``stop()`` stops
    the children in reverse order, each within its spec's ``shutdown``
    time, then the supervisor; ``kill()`` kills them all at once.
    """

    kind = "supervisor"

    def __init__(
        self,
        *children: ChildSpec | Callable[[], Any],
        template: ChildSpec | Callable[..., Any] | None = None,
        strategy: Strategy | str = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: float | None = None,
        max_backoff: float = 30.0,
        name: str | None = None,
        on_give_up: str | Callable[[Supervisor, BaseException], object] = "stop",
    ) -> None:
        super().__init__(name=name)
        specs = [_spec(c) for c in children]
        self.template: ChildSpec | None = None if template is None else _spec(template)
        if self.template is not None and specs:
            raise InvalidArgument(
                f"{self!r}: a template supervisor starts with no children "
                f"(got {len(specs)} beside the template); start them with start_child()"
            )
        self._children: list[Child] = []
        for spec in specs:
            if any(c.id == spec.id for c in self._children):
                raise InvalidArgument(
                    f"{self!r}: two children have the id {spec.id!r}; "
                    "give each its own ChildSpec(..., name=...)"
                )
            self._children.append(Child(spec, spec.id))
        self.strategy: Strategy = coerce_enum(Strategy, strategy, "strategy")
        check_number(max_restarts, f"{self!r}: max_restarts", integer=True)
        check_number(max_seconds, f"{self!r}: max_seconds")
        check_number(max_backoff, f"{self!r}: max_backoff")
        if backoff is not None:
            check_number(backoff, f"{self!r}: backoff")
        if not max_seconds > 0:
            raise InvalidArgument(f"max_seconds must be > 0, got {max_seconds!r}")
        if backoff is not None and not 0 <= backoff <= max_backoff:
            raise InvalidArgument(
                f"backoff must be between 0 and max_backoff ({max_backoff!r}), got {backoff!r}"
            )
        if not callable(on_give_up) and on_give_up not in ("stop", "ignore"):
            raise InvalidArgument(
                f"{self!r}: on_give_up must be 'stop', 'ignore' or a callable, got {on_give_up!r}"
            )
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_give_up = on_give_up
        #: How many restarts this supervisor has made in all.
        self.restarts = 0
        self._recent: collections.deque[float] = collections.deque()
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._phase = _Phase.IDLE

    @property
    def specs(self) -> tuple[ChildSpec, ...]:
        """The specs of the children it has, running or not, in start order."""
        return tuple(c.spec for c in self._children)

    @property
    def children(self) -> list[Process]:
        """The live children, in start order."""
        return [c.process for c in self._children if c.running]  # type: ignore[misc]

    def details(self) -> Mapping[str, Any]:
        """Strategy, live children and restarts so far, for ``ps``."""
        return {
            "strategy": self.strategy.value,
            "children": len(self.children),
            "restarts": self.restarts,
        }

    # -- children at run time (requests served by the supervisor's task) ---------

    async def start_child(self, *args: Any, **kwargs: Any) -> Process | None:
        """Add a child and start it; returns its process, or None if it answered IGNORE.

        On a supervisor with children, the one argument is a
        :class:`ChildSpec` (or a bare factory); the child goes last in the
        start order, so strategies and the stop order treat it as the
        others. On a template supervisor, the arguments are passed to the
        template's factory. An ignored child keeps its spec (not in a
        template supervisor). A start does not count against the restart
        limit. If the factory raises, the child is not added and the error
        is raised here; the supervisor goes on.

        Raises:
            DuplicateChild: A child with that id exists (running or not).
            ProcessStateError: The supervisor is not running (not spawned
                yet, stopping or exited).
        """
        if self.template is None:
            if len(args) != 1 or kwargs:
                raise InvalidArgument(
                    f"{self!r}: start_child() takes one ChildSpec or factory here; "
                    "per-child arguments need a template supervisor "
                    "(Supervisor(template=...))"
                )
            return await self._request("start_child", _spec(args[0]))  # type: ignore[no-any-return]
        return await self._request("start_child", args, kwargs)  # type: ignore[no-any-return]

    async def terminate_child(self, child: str | int | Process) -> None:
        """Stop a child (within its spec's ``shutdown`` time, then kill it).

        ``child`` is its id, its process or its PID. The supervisor keeps the
        spec (``restart_child`` starts it again) and does not restart it on
        its own, not even with its siblings; a temporary child, and any child
        of a template supervisor, is removed instead. Terminating a child
        that is not running does nothing.

        Raises:
            ChildNotFound: No such child.
            ProcessStateError: The supervisor is not running.
        """
        await self._request("terminate_child", child)

    async def restart_child(self, child: str | int | Process) -> Process | None:
        """Start a terminated (or ignored) child again, from its spec; returns its process.

        Returns None if the factory answered IGNORE. Not counted against the
        restart limit.

        Raises:
            ChildNotFound: No such child.
            ProcessStateError: The child is running, the supervisor is a
                template supervisor, or it is not running.
        """
        return await self._request("restart_child", child)  # type: ignore[no-any-return]

    async def delete_child(self, child: str | int | Process) -> None:
        """Forget a terminated child's spec.

        Raises:
            ChildNotFound: No such child.
            ProcessStateError: The child is running (``terminate_child`` it
                first), the supervisor is a template supervisor, or it is
                not running.
        """
        await self._request("delete_child", child)

    async def _request(self, operation: str, *args: Any) -> Any:
        phase = self._phase
        if self._archangel_state is not _RUNNING or phase not in (
            _Phase.IDLE,
            _Phase.SUPERVISING,
        ):
            why = "not spawned yet" if self.pid is None else phase.value
            raise ProcessStateError(f"{self!r} is not running ({why}): cannot {operation}()")
        future = asyncio.get_running_loop().create_future()
        self._events.put_nowait(_Request(operation, args, future))
        return await future

    async def _serve(self, request: _Request) -> None:
        """Carry out one run-time request in the supervisor's task; answer its caller."""
        future = request.future
        try:
            serve = getattr(self, "_" + request.operation)
            result = await serve(*request.args)
        except asyncio.CancelledError:  # the supervisor is killed meanwhile
            if not future.done():
                future.set_exception(
                    ProcessStateError(f"{self!r} was killed during {request.operation}()")
                )
            raise
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)

    async def _start_child(self, *args: Any) -> Process | None:
        if self.template is None:
            spec: ChildSpec = args[0]
            for other in self._children:
                if other.id == spec.id:
                    raise DuplicateChild(
                        f"{self!r} cannot start child {spec.id!r}: it has the {other!r}"
                    )
            child = Child(spec, spec.id)
        else:
            child = Child(self.template, None, args[0], args[1])
        self._children.append(child)
        try:
            process = self._start(child)
        except BaseException:
            self._children.remove(child)
            raise
        if process is None and self.template is not None:
            self._children.remove(child)  # as OTP: an ignored template child is not added
        return process

    async def _terminate_child(self, ref: str | int | Process) -> None:
        child = find(self, self._children, ref)
        if child.running:
            await stop_children(self, [child])
        child.process, child.retry = None, False
        if child.spec.restart is Restart.TEMPORARY or self.template is not None:
            self._children.remove(child)

    async def _restart_child(self, ref: str | int | Process) -> Process | None:
        child = self._find_kept(ref, "restart_child")
        if child.running:
            raise ProcessStateError(
                f"{self!r} cannot restart its {child!r}: terminate_child() it first"
            )
        return self._start(child)

    async def _delete_child(self, ref: str | int | Process) -> None:
        child = self._find_kept(ref, "delete_child")
        if child.running:
            raise ProcessStateError(
                f"{self!r} cannot delete its {child!r}: terminate_child() it first"
            )
        self._children.remove(child)

    def _find_kept(self, ref: str | int | Process, operation: str) -> Child:
        if self.template is not None:
            raise ProcessStateError(
                f"{self!r} starts its children from a template and keeps no spec of its "
                f"own per child: {operation}() does not apply (use start_child(*args) and "
                "terminate_child(process))"
            )
        return find(self, self._children, ref)

    # -- the supervisor's own life ------------------------------------------

    def on_stop(self) -> None:
        """Stop the children in reverse order, then end (see :meth:`main`)."""
        if self._phase is _Phase.IDLE:  # main() not entered: no child started yet
            self._phase = _Phase.STOPPING
            self._refuse_requests()
            super().on_stop()
        elif self._phase is _Phase.SUPERVISING:
            self._phase = _Phase.STOPPING
            self._events.put_nowait(_STOP)

    def on_kill(self, reason: ExitReason) -> None:
        """Kill the children at once, then end (see :meth:`main`)."""
        if self._phase is _Phase.IDLE:
            self._phase = _Phase.STOPPING
            self._refuse_requests()
        super().on_kill(reason)

    async def main(self) -> None:
        """Start the children, restart them as they exit, stop them when asked.

        Ends with :class:`RestartLimitExceeded` past the restart limit, and
        with whatever a factory raised if a child cannot be started at
        first. Either way, and when stopped, the children are stopped first,
        last started first; when killed, they are killed. Then a top-level
        supervisor that failed gives up as ``on_give_up`` says.
        """
        try:
            await self._supervise()
        except Exception as exc:
            self._give_up(exc)  # its children are stopped by now
            raise

    async def _supervise(self) -> None:
        self._phase = _Phase.SUPERVISING
        try:
            for child in list(self._children):
                self._start(child)
            while self._phase is _Phase.SUPERVISING:
                event = await self._events.get()
                if isinstance(event, _Request):
                    await self._serve(event)
                elif not isinstance(event, _Stop):
                    await self._child_exited(*event)
        except asyncio.CancelledError:
            await kill_children(self._children)
            raise
        finally:
            # Also after an error: no child outlives its supervisor.
            self._phase = _Phase.STOPPING
            try:
                await stop_children(self, self._children)
            finally:
                self._phase = _Phase.ENDED
                self._refuse_requests()

    def _refuse_requests(self) -> None:
        """Answer the requests still queued: the supervisor will not serve them."""
        kept: list[_Event] = []
        while not self._events.empty():
            event = self._events.get_nowait()
            if isinstance(event, _Request):
                if not event.future.done():
                    event.future.set_exception(
                        ProcessStateError(f"{self!r} is stopping: cannot {event.operation}()")
                    )
            else:
                kept.append(event)
        for event in kept:
            self._events.put_nowait(event)

    def _give_up(self, exc: BaseException) -> None:
        """Tell whoever ``on_give_up`` names that this top-level supervisor gave up."""
        if self._archangel_parent is not None:
            return  # its own supervisor sees the exit
        action = self.on_give_up
        if action == "ignore":
            return
        handler = self.manager.give_up_handler if self.manager is not None else None
        if callable(action):
            handler = action  # type: ignore[assignment]
        if handler is None:
            return
        try:
            handler(self, exc)
        except Exception:
            logger.exception("%r: its on_give_up handler %r raised", self, handler)

    # -- children -------------------------------------------------------------

    def _start(self, child: Child) -> Process | None:
        """Start ``child`` from its spec; None (and no process) if it answered IGNORE."""
        manager, events = self.manager, self._events
        if manager is None:
            raise ProcessStateError(f"{self!r} starts children only once spawned by a manager")
        spec = child.spec
        child.retry = False
        made = spec.factory(*child.args, **child.kwargs)
        child.process = None
        if made is IGNORE:
            child.ignored = True
            logger.info("%r: %r not started: its factory answered IGNORE", self, child.id)
            return None
        process: Process = manager.spawn(made, name=spec.name)
        process._archangel_parent = self
        process.at_exit(events.put_nowait, (child, process))
        child.process, child.ignored = process, False
        return process

    async def _child_exited(self, child: Child, process: Process | None) -> None:
        """A child exited (``process``) or could not be restarted (None): apply the strategy."""
        if process is not None and child.process is not process:
            return  # one we stopped on purpose, or one already replaced
        if process is None and not child.retry:
            return  # started or terminated (on request) since its restart failed
        if child not in self._children:
            return  # deleted meanwhile
        child.process, child.retry = None, False
        spec = child.spec
        reason = process.exit_reason if process is not None else ExitReason.ERROR
        if spec.restart is Restart.TEMPORARY or (
            spec.restart is Restart.TRANSIENT and reason in _CLEAN_EXITS
        ):
            if spec.restart is Restart.TEMPORARY or self.template is not None:
                self._children.remove(child)  # as in OTP: gone once it is not restarted
            return
        if self._winding_down():
            return
        if process is None:
            what = f"{child!r} could not be restarted"
        else:
            what = f"pid {process.pid} ({process.name}) exited {reason.value if reason else ''}"
        delay = self._count_restart(what)
        if delay and not await self._sleep(delay):
            return
        if child not in self._children:
            return
        index = self._children.index(child)
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = list(self._children)
        else:
            group = self._children[index:]
        # The child and those of the group that run: a terminated or ignored
        # sibling stays down until restart_child() (an operator's choice).
        again = [c for c in group if c is child or c.running]
        await stop_children(self, group)
        if self._winding_down():
            return
        names = ", ".join(c.id or c.spec.id for c in again)
        logger.info("%r restarts %s: %s", self, names, what)
        for sibling in again:
            if sibling.spec.restart is Restart.TEMPORARY:
                self._children.remove(sibling)  # as in OTP: never restarted, not even here
                continue
            try:
                if self._start(sibling) is None and self.template is not None:
                    self._children.remove(sibling)
            except Exception:
                logger.exception("%r could not restart %r", self, sibling)
                sibling.retry = True
                self._events.put_nowait((sibling, None))

    def _winding_down(self) -> bool:
        """True once the supervisor or its manager is stopping: no more restarts."""
        return self._phase is not _Phase.SUPERVISING or (
            self.manager is not None and self.manager.closed
        )

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
        held: list[_Event] = []
        try:
            async with asyncio.timeout(delay):
                while True:
                    event = await events.get()
                    if isinstance(event, _Stop):
                        return False
                    held.append(event)  # other exits and requests wait their turn
        except TimeoutError:
            return True
        finally:
            for event in held:
                events.put_nowait(event)


_CLEAN_EXITS = (ExitReason.NORMAL, ExitReason.SHUTDOWN)


def _spec(child: ChildSpec | Callable[..., Any]) -> ChildSpec:
    return child if isinstance(child, ChildSpec) else ChildSpec(child)
