"""``ProcessManager``: PIDs, the table of live processes, history and shutdown.

The manager is a plain object you create and pass around; two managers on
one loop share nothing. Its hot path (factory → register → exit) is O(1),
creates no task, logs nothing and publishes nothing: a dict insert, a dict
delete, a history record and a few counters.

Thread safety: the manager belongs to its loop's thread. Other threads (the
console) may read :meth:`ProcessManager.processes`, ``len`` and
:attr:`ProcessManager.counters`, which take atomic snapshots; anything that
changes state must be handed to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar, overload

from ..errors import (
    AlreadyRegistered,
    InvalidArgument,
    ManagerClosed,
    NotAProcess,
    NotRegistered,
    check_number,
)
from .adopt import adopt
from .frames import clear_frames, innermost
from .process import _EMPTY, _EXITED, ExitReason, Process, _check_count
from .records import History, ProcessInfo, _Record
from .task import TaskProcess

__all__ = ["CANCEL_GRACE", "KILL_GRACE", "History", "ProcessManager"]

logger = logging.getLogger(__name__)

_P = TypeVar("_P", bound=Process)
_T = TypeVar("_T", bound=TaskProcess)
_time = time.time

_NORMAL, _KILLED, _ERROR = ExitReason.NORMAL, ExitReason.KILLED, ExitReason.ERROR

#: How long killed processes get to report their exit (``shutdown``, a supervisor):
#: a protocol reports on the loop's next iteration, a task once its ``finally``
#: blocks have run. Short, so that a forced stop still ends near its timeout.
KILL_GRACE = 1.0
#: How long a forced shutdown waits for the last async hooks it cancelled to
#: unwind (a cancelled coroutine usually ends on the loop's next iteration).
CANCEL_GRACE = 0.1


class _KindCounts:
    __slots__ = ("exited", "failed", "killed", "started", "user")

    def __init__(self) -> None:
        self.started = self.exited = self.killed = self.failed = 0
        # The user counts (Process.inc) of this kind's processes, live and exited:
        # each count of a registered process is added here as it is made.
        self.user: dict[str, float] | None = None


class ProcessManager:
    """Registers processes, assigns PIDs, lists, kills and shuts them down.

    Args:
        history: How many completed processes :attr:`history` keeps (as
            :class:`ProcessInfo` records, never the processes themselves).
        name: A label for logs and ``repr``.
    """

    def __init__(self, history: int = 1000, *, name: str | None = None) -> None:
        owner = "ProcessManager" if name is None else f"ProcessManager {name!r}"
        check_number(history, f"{owner}: history", integer=True)
        self.name = name or "manager"
        # Records are plain tuples (cheap to build on every exit, and small);
        # the ``history`` property turns them into ProcessInfo when read.
        self._history: collections.deque[_Record] = collections.deque(maxlen=history)
        # Read on every exit: a plain attribute reads faster than deque.maxlen.
        self._keep_history = history > 0
        self._procs: dict[int, Process] = {}
        # The task of each spawned process still running, with its PID: so
        # the console finds which tasks are processes without walking them all.
        self._task_pids: dict[asyncio.Task[Any], int] = {}
        self._last_pid = 0
        self._kinds: dict[str, _KindCounts] = {}
        # The manager's (the app's) own user statistics; the processes' are
        # their kinds' (_KindCounts.user).
        self._user: dict[str, float] = {}
        self._closing = False
        self._shutdown_task: asyncio.Task[bool] | None = None
        self._drained: asyncio.Future[None] | None = None
        # Async at-exit hooks being awaited: their PID and the hook, for the log.
        self._hook_tasks: dict[asyncio.Future[Any], tuple[int | None, Any]] = {}
        #: Called with a top-level supervisor of this manager and its error when
        #: that supervisor gives up (its ``on_give_up="stop"``, the default). The
        #: :class:`~archangel.App` running the manager sets it to stop the App;
        #: None (a bare manager): the supervisor just ends with its error.
        self.give_up_handler: Callable[[Process, BaseException], object] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<ProcessManager {self.name!r} running={len(self._procs)} [{state}]>"

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` has begun; ``register`` then refuses."""
        return self._closing

    # -- registering ----------------------------------------------------------

    @overload
    def register(self, target: _P) -> _P: ...
    @overload
    def register(self, target: type[_P]) -> Callable[..., _P]: ...
    @overload
    def register(self, target: Callable[..., Any]) -> Callable[..., Any]: ...

    def register(self, target: Any) -> Any:
        """Give a process a PID, or wrap a factory so its products get one.

        * A :class:`Process` instance: assigns the next PID and returns it.
        * A class or any callable factory: returns a factory whose every
          product is registered, so ``@manager.register`` works on protocol
          factories and ``loop.create_server(manager.register(Echo), ...)``
          works. Products that do not inherit :class:`Process` (a foreign
          protocol) are adopted: wrapped in a process proxy.

        Raises:
            AlreadyRegistered: The process already has a PID.
            ManagerClosed: The manager is shutting down.
            NotAProcess: ``target`` is neither a process nor callable.
        """
        if isinstance(target, Process):
            return self._register(target)
        if not callable(target):
            raise NotAProcess(
                f"{self!r} cannot register {target!r}: not a Process and not callable"
            )
        if isinstance(target, type) and issubclass(target, Process):
            return self._class_factory(target)
        return self._any_factory(target)

    def _register(self, process: Process) -> Process:
        if process._archangel_pid is not None:
            raise AlreadyRegistered(
                f"{process!r} is already registered with {process._archangel_manager!r}"
            )
        if self._closing:
            raise ManagerClosed(f"{self!r} is shutting down: cannot register {process!r}")
        pid = self._last_pid = self._last_pid + 1
        process._archangel_pid = pid
        process._archangel_manager = self
        process._archangel_started = _time()
        self._procs[pid] = process
        counts = self._kinds.get(process.kind)
        if counts is None:
            counts = self._kinds[process.kind] = _KindCounts()
        counts.started += 1
        if process._archangel_stats is not None:  # it counted before it was registered
            self._join_kind(process)
        return process

    def _class_factory(self, cls: type[_P]) -> Callable[..., _P]:
        # The accept path: _register inlined (a call less per connection).
        procs = self._procs
        kinds = self._kinds

        @functools.wraps(cls, updated=())
        def factory(*args: Any, **kwargs: Any) -> _P:
            process = cls(*args, **kwargs)
            if self._closing or process._archangel_pid is not None:
                self._register(process)  # raises the right error
                return process
            pid = self._last_pid = self._last_pid + 1
            process._archangel_pid = pid
            process._archangel_manager = self
            process._archangel_started = _time()
            procs[pid] = process
            counts = kinds.get(process.kind)
            if counts is None:
                counts = kinds[process.kind] = _KindCounts()
            counts.started += 1
            return process

        factory.manager = self  # type: ignore[attr-defined]
        return factory

    def _any_factory(self, make: Callable[..., Any]) -> Callable[..., Process]:
        register = self._register

        @functools.wraps(make, updated=())
        def factory(*args: Any, **kwargs: Any) -> Process:
            product = make(*args, **kwargs)
            return register(product if isinstance(product, Process) else adopt(product))

        factory.manager = self  # type: ignore[attr-defined]
        return factory

    @overload
    def spawn(self, target: _T, *, name: str | None = None) -> _T: ...
    @overload
    def spawn(
        self,
        target: Coroutine[Any, Any, Any] | Callable[[], Coroutine[Any, Any, Any]],
        *,
        name: str | None = None,
    ) -> TaskProcess: ...

    def spawn(self, target: Any, *, name: str | None = None) -> TaskProcess:
        """Run a coroutine as a process (kind ``"task"``) and return the process.

        ``target`` is a coroutine, an async function taking no arguments, or
        a :class:`TaskProcess` (a pipeline, a supervisor), which is started.
        Must be called with the loop running.

        Raises:
            NotAProcess: ``target`` is none of these.
            ManagerClosed: The manager is shutting down.
            RuntimeError: No event loop is running; nothing is registered
                (and a coroutine given is closed).
        """
        if isinstance(target, TaskProcess):
            process = target
            if name is not None:
                process.name = name
        else:
            coro = target() if callable(target) and not asyncio.iscoroutine(target) else target
            if not asyncio.iscoroutine(coro):
                raise NotAProcess(
                    f"{self!r} cannot spawn {target!r}: not a coroutine, async function "
                    "or TaskProcess"
                )
            process = TaskProcess(coro, name=name)
        try:
            self._require_loop(process)  # before registering: no entry for a task never run
            self._register(process)
        except BaseException:
            if process is not target and process._coro is not None:
                process._coro.close()  # no "never awaited" warning for a refused coroutine
            raise
        task = process.start()
        self._task_pids[task] = process._archangel_pid  # type: ignore[assignment]
        task.add_done_callback(self._task_pids.pop)
        return process

    def _require_loop(self, process: TaskProcess) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            message = f"{self!r} cannot spawn {process!r}: no running event loop"
            raise RuntimeError(message) from None

    # -- exits (called by Process._exit) --------------------------------------

    def _exited(self, process: Process, reason: ExitReason) -> None:
        procs = self._procs
        del procs[process._archangel_pid]  # type: ignore[arg-type]
        kind = process.kind
        try:  # free until it raises
            counts = self._kinds[kind]
        except KeyError:
            counts = self._moved_kind(process)
        counts.exited += 1
        if reason is not _NORMAL:
            if reason is _KILLED:
                counts.killed += 1
            elif reason is _ERROR:
                counts.failed += 1
                error = process._archangel_error
                if error is not None and self._keep_history:
                    clear_frames(error)  # the record must not keep the process
        if self._keep_history:
            self._history.append(
                (
                    process._archangel_pid,
                    kind,
                    process._archangel_name or type(process),
                    process._archangel_started,
                    process._archangel_ended,
                    reason,
                    process._archangel_error,
                    process.details() if reason is _ERROR or process.keep_details else _EMPTY,
                )
            )
        if self._drained is not None and not procs and not self._drained.done():
            self._drained.set_result(None)

    def _moved_kind(self, process: Process) -> _KindCounts:
        """The counts for a process whose ``kind`` changed after it was registered.

        Its start was counted under the kind it had then, most likely its
        class's kind (an instance that sets ``self.kind`` later, in
        ``connection_made``, say); failing that, under the kind it has now.
        """
        counts = self._kinds.get(type(process).kind)
        if counts is None:
            counts = self._kinds[process.kind] = _KindCounts()
        return counts

    def _join_kind(self, process: Process) -> None:
        """Make a registered process's counts add to its kind's totals, from the ones it has."""
        counts = process._archangel_stats
        if counts is None or counts.kind is not None:
            return
        kind = self._kinds.get(process.kind)
        if kind is None:
            kind = self._kinds[process.kind] = _KindCounts()
        if kind.user is None:
            kind.user = {}
        totals = counts.kind = kind.user
        for name, n in counts.own.items():
            totals[name] = totals.get(name, 0) + n

    # -- user statistics --------------------------------------------------------

    def inc(self, name: str, n: float = 1) -> None:
        """Count ``n`` more of the event ``name`` for the service as a whole.

        The manager's own statistics (``App.inc`` counts here), beside the
        processes' (:meth:`Process.inc`): :attr:`counters` shows them under
        ``"user"``; the runlog gives their rates.

        Raises:
            InvalidArgument: ``name`` is not a non-empty string, or ``n`` is
                not a finite number.
        """
        user = self._user
        if type(n) is int and name in user:  # a name counted before: checked then
            user[name] += n
            return
        _check_count(self, name, n)
        user[name] = user.get(name, 0) + n

    def _await_hook(self, process: Process, hook: Any, awaitable: Awaitable[Any]) -> None:
        future = asyncio.ensure_future(awaitable)
        pid = process._archangel_pid
        self._hook_tasks[future] = (pid, hook)
        future.add_done_callback(functools.partial(self._hook_done, pid, hook))

    def _hook_done(self, pid: int | None, hook: Any, future: asyncio.Future[Any]) -> None:
        self._hook_tasks.pop(future, None)
        if not future.cancelled() and future.exception() is not None:
            logger.error(
                "at-exit hook %r of pid %s raised", hook, pid, exc_info=future.exception()
            )

    # -- looking up -----------------------------------------------------------

    @property
    def history(self) -> History:
        """Completed processes as ``ProcessInfo`` records, oldest first and newest last.

        A read-only sequence bounded by the ``history`` argument; it keeps
        records, never the processes. Iterating takes a snapshot, so it is
        safe from another thread.
        """
        return History(self._history)

    def __getitem__(self, pid: int) -> Process:
        try:
            return self._procs[pid]
        except KeyError:
            raise NotRegistered(self._unknown(pid)) from None

    def _unknown(self, pid: object) -> str:
        if isinstance(pid, int) and 0 < pid <= self._last_pid:
            return f"pid {pid} has exited ({self!r})"
        return f"no pid {pid!r} was ever issued by {self!r}"

    def get(self, pid: int) -> Process | None:
        """The live process with ``pid``, or None; safe from any thread."""
        return self._procs.get(pid)

    def __contains__(self, pid: object) -> bool:
        return pid in self._procs

    def __len__(self) -> int:
        return len(self._procs)

    def __iter__(self) -> Iterator[Process]:
        """The live processes in PID order (a snapshot: safe to kill while iterating)."""
        return iter(self.processes())

    def processes(self) -> list[Process]:
        """A snapshot list of the live processes in PID order; safe from any thread."""
        return list(self._procs.values())

    def task_pids(self) -> dict[asyncio.Task[Any], int]:
        """The asyncio task of each live process :meth:`spawn` started, with its PID.

        A snapshot (one copy in C), safe from any thread: the console uses it
        to tell which of the loop's tasks are processes.
        """
        return self._task_pids.copy()

    def ps(self, kind: str | None = None) -> list[ProcessInfo]:
        """Snapshots of the live processes in PID order, optionally of one kind."""
        return [p.info() for p in self.processes() if kind is None or p.kind == kind]

    @property
    def counters(self) -> dict[str, Any]:
        """Totals and per-kind counts (started, exited, killed, failed, running).

        With user statistics, once something counted: a kind's ``"user"`` holds
        the counts of its processes (:meth:`Process.inc`), live and exited,
        and the top-level ``"user"`` the manager's own (:meth:`inc`).
        """
        kinds: dict[str, dict[str, Any]] = {}
        for kind, c in list(self._kinds.items()):
            kinds[kind] = {
                "started": c.started,
                "exited": c.exited,
                "killed": c.killed,
                "failed": c.failed,
                "running": c.started - c.exited,
            }
            if c.user:
                kinds[kind]["user"] = c.user.copy()
        totals = {
            key: sum(k[key] for k in kinds.values())
            for key in ("started", "exited", "killed", "failed", "running")
        }
        counters: dict[str, Any] = {**totals, "kinds": kinds}
        if self._user:
            counters["user"] = self._user.copy()
        return counters

    # -- ending ---------------------------------------------------------------

    def kill(self, pid: int, reason: ExitReason | str = ExitReason.KILLED) -> bool:
        """Kill one process. Returns False (and does nothing) for an unknown PID.

        An unknown PID is not an error here: a process may exit on its own
        between an operator reading ``ps`` and typing ``kill``. Use
        ``manager[pid]`` to get :class:`NotRegistered` instead.

        Raises:
            InvalidArgument: ``pid`` is not an int (``"3"``, ``3.0``): a
                mistake, not a process that may have exited.
        """
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise InvalidArgument(f"{self!r}: kill() takes an int pid, got {pid!r}")
        process = self._procs.get(pid)
        if process is None:
            return False
        process.kill(reason)
        return True

    def killall(self, kind: str | None = None) -> int:
        """Kill every live process (of ``kind``, if given); returns how many."""
        victims = [p for p in self.processes() if kind is None or p.kind == kind]
        for process in victims:
            process.kill()
        return len(victims)

    async def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop every process gracefully within ``timeout`` seconds; force what is left.

        Registration is refused from the first call on. Each process gets
        ``stop()``, except those with a live parent (a supervisor's
        children), which their parent stops. ``timeout`` bounds the whole
        stop: the graceful ends *and* the async at-exit hooks. Past it, what
        still runs is killed and gets :data:`KILL_GRACE` seconds to report
        its exit (one that does not is dropped from the table, with an
        error logged); then every async hook still pending is cancelled and
        logged with its PID and where it was waiting (the hooks the kills
        started get the grace first). So the call returns within about
        ``timeout + KILL_GRACE`` seconds (plus :data:`CANCEL_GRACE` for hooks
        cancelled last to unwind), whatever the processes and hooks do.

        Safe to call twice (the second call waits for the first and returns
        the same) and while processes exit on their own.

        Returns:
            True if every process ended and every async hook finished within
            ``timeout``, with nothing killed or cancelled; False if the stop
            was forced.

        Raises:
            InvalidArgument: ``timeout`` is not a number ``>= 0``; nothing
                is stopped.
        """
        check_number(timeout, f"{self!r}: shutdown() timeout")
        self._closing = True
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self._shutdown(timeout))
        return await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for process in self.processes():
            parent = process._archangel_parent
            if (
                parent is not None
                and parent._archangel_manager is self
                and parent._archangel_state is not _EXITED
            ):
                continue  # its parent (a supervisor) stops it, in its own order
            try:
                process.stop()
            except Exception:
                logger.exception("stop() of pid %s raised; killing it", process.pid)
                _kill(process)
        if await self._wait_drained(deadline) and await self._wait_hooks(deadline):
            return True
        # Forced. What was still pending at the deadline has had its time: the
        # hooks are cancelled now, the processes killed. Only what the kills
        # start (the killed processes' own hooks) gets the grace.
        grace = loop.time() + KILL_GRACE
        cancelled = self._cancel_hooks(f"still running {timeout:g} s into the shutdown")
        left = self.processes()
        if left:
            logger.warning(
                "%r: %d processes still running after %g s; killing them",
                self,
                len(left),
                timeout,
            )
            for process in left:
                _kill(process)
            if not await self._wait_drained(grace):
                for process in self.processes():
                    logger.error("pid %s did not exit when killed; dropping it", process.pid)
                    process._exit(None)
        if not await self._wait_hooks(grace):
            why = f"still running {KILL_GRACE:g} s after its process was killed"
            cancelled |= self._cancel_hooks(why, skip=cancelled)
            await self._wait_hooks(loop.time() + CANCEL_GRACE)
        for future, (pid, hook) in self._hook_tasks.items():
            if not future.done():  # it caught the CancelledError and went on
                logger.error(
                    "at-exit hook %r of pid %s ignored its cancellation; no longer waited for",
                    hook,
                    pid,
                )
        return False

    def _cancel_hooks(
        self, why: str, skip: set[asyncio.Future[Any]] | None = None
    ) -> set[asyncio.Future[Any]]:
        """Cancel the pending async hooks (but ``skip``), logging PID and where each waits."""
        cancelled = set()
        for future, (pid, hook) in list(self._hook_tasks.items()):
            if future.done() or (skip is not None and future in skip):
                continue
            coro = future.get_coro() if isinstance(future, asyncio.Task) else None
            logger.error(
                "at-exit hook %r of pid %s %s, awaiting at %s; cancelling it",
                hook,
                pid,
                why,
                innermost(coro) or "?",
            )
            future.cancel()
            cancelled.add(future)
        return cancelled

    async def _wait_hooks(self, deadline: float) -> bool:
        """Wait until no async hook is pending (True) or ``deadline`` passes (False)."""
        loop = asyncio.get_running_loop()
        while pending := [f for f in self._hook_tasks if not f.done()]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(pending, timeout=remaining)
        return True

    async def _wait_drained(self, deadline: float) -> bool:
        if not self._procs:
            return True
        self._drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout_at(deadline):
                await self._drained
        except TimeoutError:
            return False
        finally:
            self._drained = None
        return True


def _kill(process: Process) -> None:
    """Kill ``process``; if its ``kill()`` raises, log that and drop it as killed."""
    try:
        process.kill()
    except Exception:
        logger.exception("kill() of pid %s raised; dropping it", process.pid)
        process._exit(None)
