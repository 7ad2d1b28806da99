"""The ``Process`` mixin: a PID, a state and at-exit hooks for any unit of work.

A protocol becomes a process by inheriting the mixin::

    class Echo(Process, asyncio.Protocol):
        def connection_made(self, transport): self.transport = transport
        def data_received(self, data): self.transport.write(data)

Defaults live on the class itself, so a subclass's ``__init__`` never has to
call ``super().__init__()``. (The archangel notes set them in ``__new__`` for
that reason; class-level defaults give the same guarantee for a fifth of the
cost of a Python ``__new__`` on every accepted connection.) And
``connection_made``/``connection_lost`` are instrumented when a subclass is
created, so the bookkeeping does not depend on user code calling ``super()``
either.

This module knows nothing of managers beyond the two calls a process makes on
its own (``manager._exited`` and ``manager._await_hook``); PIDs and tables
live in :mod:`archangel.manager`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import InvalidArgument
from .records import ExitReason as ExitReason
from .records import ProcessInfo as ProcessInfo
from .records import ProcessState as ProcessState

if TYPE_CHECKING:
    from .manager import ProcessManager

__all__ = ["ExitReason", "Process", "ProcessInfo", "ProcessState"]

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
_time = time.time
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Async hooks of processes that have no manager to await them: a strong
# reference until they finish, as asyncio's docs require for such tasks.
_unmanaged_hooks: set[asyncio.Future[Any]] = set()


_NORMAL, _KILLED, _ERROR = ExitReason.NORMAL, ExitReason.KILLED, ExitReason.ERROR
NEW = ProcessState.NEW
RUNNING = ProcessState.RUNNING
EXITED = ProcessState.EXITED


def _unmanaged_hook_done(pid: int | None, hook: Any, future: asyncio.Future[Any]) -> None:
    """Forget a finished async hook of a process without a manager; log its failure."""
    _unmanaged_hooks.discard(future)
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("at-exit hook %r of pid %s raised", hook, pid, exc_info=exc)


def _exit_reason(process: Process, reason: ExitReason | str) -> ExitReason:
    try:
        return ExitReason(reason)
    except ValueError:
        expected = ", ".join(r.value for r in ExitReason)
        raise InvalidArgument(
            f"cannot kill {process!r} with reason {reason!r}: expected one of {expected}"
        ) from None


#: Every instance attribute the bookkeeping writes, in the order the accept path
#: writes them (factory, connection_made, connection_lost, then the rare ones).
_INSTANCE_KEYS = (
    "pid",
    "manager",
    "started",
    "transport",
    "state",
    "ended",
    "exit_reason",
    "error",
    "_hooks",
    "_name",
    "_reason",
    "_waiters",
)


def _share_keys(cls: type) -> None:
    """Teach a new Process class every key its instances will get, before any exists.

    CPython keeps instance attributes as compact values laid out by keys that
    all instances of a class share, and an instance has room only for the keys
    its class knew when the instance was made. If the first connections of a
    burst are all built before their ``connection_made`` (uvloop may accept
    several per loop iteration), the later keys do not fit and every instance
    falls back to a full dict: 421 instead of about 200 bytes per connection
    (``benchmarks/echo.py``). One throwaway instance, made without running any
    user code, fixes the layout up front.
    """
    if getattr(cls, "__del__", None) is not None:
        return  # a finalizer would run on the throwaway instance
    try:
        dummy: object = object.__new__(cls)
        for key in _INSTANCE_KEYS:
            setattr(dummy, key, None)
    except (TypeError, AttributeError):  # an unusual base or a property: skip
        return


def _instrumented(fn: _F) -> _F:
    fn._archangel_instrumented = True  # type: ignore[attr-defined]
    return fn


def _wrap_connection_made(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(fn)
    def connection_made(self: Process, transport: Any) -> Any:
        if self.state is NEW:
            self.transport = transport
            self.state = RUNNING
        elif self.state is EXITED:
            # Killed between the factory and the transport's first call.
            transport.abort()
            return None
        return fn(self, transport)

    return _instrumented(connection_made)


def _wrap_connection_lost(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(fn)
    def connection_lost(self: Process, exc: BaseException | None) -> Any:
        if self.ended is not None:  # a super() call from an outer override
            return fn(self, exc)
        self.ended = _time()
        try:
            return fn(self, exc)
        finally:
            self._exit(exc)

    return _instrumented(connection_lost)


class Process:
    """Mixin that makes an object a process: PID, state, exit reason, hooks.

    Attributes:
        pid: Assigned by :meth:`ProcessManager.register`; None until then.
        manager: The manager that registered the process, or None.
        state: A :class:`ProcessState`.
        exit_reason: An :class:`ExitReason` once exited, else None.
        error: The exception that ended the process, if any. Once the
            manager's history records it, the variables of its traceback's
            finished frames are cleared (so the record keeps no protocol
            alive); files and lines remain.
        started: Wall-clock time of registration (``time.time()``).
        ended: Wall-clock time the process began to exit, else None.
        transport: For protocols, the transport given to ``connection_made``.
        kind: A short class-level label (``"conn"``, ``"task"``, ...). Set it
            before registering: the counters count a process under the kind
            it was registered with.
        parent: The process that started this one and stops it (a
            :class:`~archangel.Supervisor`), or None.
    """

    # No __slots__ and no __new__: every default below is a class attribute,
    # and an instance stores only what changes, in its __dict__ (CPython keeps
    # such attributes as compact inline values), as any protocol object does.

    kind: str = "conn"
    #: Keep :meth:`details` in the history record even after a normal exit
    #: (pipelines keep their counters; connections keep nothing, to stay small).
    keep_details: bool = False

    pid: int | None = None
    manager: ProcessManager | None = None
    state: ProcessState = NEW
    exit_reason: ExitReason | None = None
    error: BaseException | None = None
    started: float | None = None
    ended: float | None = None
    transport: Any = None
    parent: Process | None = None
    _hooks: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] | None = None
    _name: str | None = None
    _reason: ExitReason | None = None
    _waiters: list[asyncio.Future[None]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _share_keys(cls)
        # Whatever connection_made/connection_lost the class resolves to (its
        # own, a base's, or asyncio.Protocol's no-op when the bases are in the
        # other order), make sure the bookkeeping wraps it exactly once.
        made = cls.connection_made
        if not getattr(made, "_archangel_instrumented", False):
            cls.connection_made = _wrap_connection_made(made)  # type: ignore[method-assign,assignment]
        lost = cls.connection_lost
        if not getattr(lost, "_archangel_instrumented", False):
            cls.connection_lost = _wrap_connection_lost(lost)  # type: ignore[method-assign,assignment]

    # -- identity ---------------------------------------------------------

    @property
    def name(self) -> str:
        """A label for listings; defaults to the class name."""
        return self._name or type(self).__name__

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    def __repr__(self) -> str:
        reason = f" {self.exit_reason.value}" if self.exit_reason else ""
        return f"<{self.name} pid={self.pid} {self.kind} [{self.state.value}{reason}]>"

    def details(self) -> Mapping[str, Any]:
        """What ``ps`` shows beside the name; protocols show their peer.

        Override to add more (keep it cheap: ``ps`` calls it per process).
        """
        transport = self.transport
        if transport is None:
            return _EMPTY
        try:
            peer = transport.get_extra_info("peername")
        except Exception:  # a closed transport may refuse
            return _EMPTY
        return {"peer": peer} if peer else _EMPTY

    def info(self) -> ProcessInfo:
        """A :class:`ProcessInfo` snapshot; ``details`` names the parent's PID, if any."""
        details = self.details()
        if self.parent is not None:
            details = {**details, "parent": self.parent.pid}
        return ProcessInfo(
            self.pid,
            self.kind,
            self.name,
            self.state,
            self.started,
            self.ended,
            self.exit_reason,
            self.error,
            details,
        )

    # -- at-exit hooks ------------------------------------------------------

    def at_exit(self, fn: _F, /, *args: Any, **kwargs: Any) -> _F:
        """Register ``fn(*args, **kwargs)`` to run once after the process exits.

        Hooks run last registered first. A hook that raises is logged with
        the PID and the others still run, whatever it raised: an
        ``asyncio.CancelledError`` (or any other exception) is logged and
        dropped, while a ``KeyboardInterrupt`` or ``SystemExit`` is raised
        again once every hook has run (the first of them, if several).
        A hook that returns an awaitable is awaited by the manager (and
        :meth:`ProcessManager.shutdown` waits for it), or, for a process
        without a manager, run as a task; its failure is logged with the PID
        too. Returns ``fn``, so it works as a decorator. Registering on an
        exited process runs the hook at once.
        """
        if self.state is EXITED:
            interrupt = self._run_hook(fn, args, kwargs)
            if interrupt is not None:
                raise interrupt
            return fn
        if self._hooks is None:
            self._hooks = []
        self._hooks.append((fn, args, kwargs))
        return fn

    @property
    def pending_hooks(self) -> int:
        """How many at-exit hooks are registered and have not run yet."""
        return len(self._hooks) if self._hooks is not None else 0

    def _run_hook(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> BaseException | None:
        """Run one hook, logging what it raises; return an interrupt to raise again."""
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            logger.exception("at-exit hook %r of pid %s raised", fn, self.pid)
            return exc if isinstance(exc, KeyboardInterrupt | SystemExit) else None
        if result is not None and isinstance(result, Awaitable):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                logger.error(
                    "at-exit hook %r of pid %s returned an awaitable, but no event loop "
                    "is running to await it",
                    fn,
                    self.pid,
                )
                if inspect.iscoroutine(result):
                    result.close()  # no "never awaited" warning
                return None
            if self.manager is not None:
                self.manager._await_hook(self, fn, result)
            else:
                future = asyncio.ensure_future(result)
                _unmanaged_hooks.add(future)
                future.add_done_callback(functools.partial(_unmanaged_hook_done, self.pid, fn))
        return None

    # -- ending ---------------------------------------------------------------

    def kill(self, reason: ExitReason | str = ExitReason.KILLED) -> None:
        """End the process now: a protocol aborts its transport.

        The exit is recorded with ``reason`` once the process has actually
        ended (for a protocol, when ``connection_lost`` runs). Killing an
        exited process does nothing.
        """
        if self.state is EXITED or self.ended is not None:
            return
        self._reason = _exit_reason(self, reason)
        self.on_kill(self._reason)

    def on_kill(self, reason: ExitReason) -> None:
        """How this kind of process is ended by :meth:`kill`; override to change.

        By default the transport is aborted (``connection_lost`` follows), or,
        with no transport yet, the process exits at once.
        """
        if self.transport is not None:
            self.transport.abort()
        else:
            self._exit(None)

    def stop(self) -> Awaitable[None]:
        """Ask the process to end gracefully; the exit reason is ``SHUTDOWN``.

        Calls :meth:`on_stop`. Returns an awaitable that completes once the
        process has exited, so ``await process.stop()`` waits and a plain
        ``process.stop()`` does not (nothing is left un-awaited). The
        manager's shutdown timeout bounds how long the process may take.
        """
        if self.state is not EXITED and self.ended is None:
            if self._reason is None:
                self._reason = ExitReason.SHUTDOWN
            self.on_stop()
        return _Exited(self)

    def on_stop(self) -> None:
        """How this kind of process ends gracefully; override to finish work first.

        By default the transport is closed once its buffered writes are
        flushed, or, with no transport yet, the process exits at once.
        """
        if self.transport is not None:
            self.transport.close()
        else:
            self._exit(None)

    async def wait(self) -> None:
        """Return once the process has exited and its sync hooks have run."""
        if self.state is EXITED:
            return
        future = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(future)
        await future

    def _exit(self, exc: BaseException | None) -> None:
        """Record the exit, tell the manager, run the hooks. Runs once."""
        if self.state is EXITED:
            return
        if self.ended is None:
            self.ended = _time()
        self.state = EXITED
        reason = self._reason
        if reason is None or (exc is not None and reason is not _KILLED):
            if exc is None:
                reason = _NORMAL
            else:
                reason = _ERROR
                self.error = exc
        self.exit_reason = reason
        if self.manager is not None:
            self.manager._exited(self, reason)
        interrupt = None
        if self._hooks is not None:
            hooks, self._hooks = self._hooks, None
            for fn, args, kwargs in reversed(hooks):
                raised = self._run_hook(fn, args, kwargs)
                if raised is not None and interrupt is None:
                    interrupt = raised
        if self._waiters is not None:
            waiters, self._waiters = self._waiters, None
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        if interrupt is not None:  # a hook's KeyboardInterrupt or SystemExit, once all ran
            raise interrupt

    # -- protocol hooks (instrumented: bookkeeping needs no super() call) -----

    @_instrumented
    def connection_made(self, transport: Any) -> None:
        """Record the transport and mark the process running."""
        if self.state is NEW:
            self.transport = transport
            self.state = RUNNING
        elif self.state is EXITED:
            transport.abort()

    @_instrumented
    def connection_lost(self, exc: BaseException | None) -> None:
        """Mark the process exited (``ERROR`` if ``exc``) and run its hooks."""
        # With ``ended`` already set, an instrumented override is running and
        # called super(): it exits the process itself once its body is done.
        if self.ended is not None:
            return
        self.ended = _time()
        manager = self.manager
        if (
            exc is None
            and manager is not None
            and self._reason is None
            and self._hooks is None
            and self._waiters is None
        ):
            # The usual end of a connection, a frame shorter than _exit (the
            # path every connection takes; benchmarks/echo.py): the same
            # outcome as _exit when there is nothing else to do.
            self.state = EXITED
            self.exit_reason = _NORMAL
            manager._exited(self, _NORMAL)
            return
        self._exit(exc)


class _Exited:
    """Awaitable returned by :meth:`Process.stop`: waits for the exit when awaited."""

    __slots__ = ("_process",)

    def __init__(self, process: Process) -> None:
        self._process = process

    def __await__(self) -> Generator[Any, None, None]:
        return self._process.wait().__await__()
