"""The ``Process`` mixin: a PID, a state and at-exit hooks for any unit of work.

A protocol becomes a process by inheriting the mixin::

    class Echo(Process, asyncio.Protocol):
        def connection_made(self, transport): self.transport = transport
        def data_received(self, data): self.transport.write(data)

``Process.__new__`` sets every per-instance default, always in the same
order, so a subclass's ``__init__`` never has to call ``super().__init__()``
(the design card and the archangel notes ask for exactly this) and every
instance of a class shares one compact attribute layout from the first
instance on. ``connection_made``/``connection_lost`` are instrumented when a
subclass is created, so the bookkeeping does not depend on user code calling
``super()`` either.

The bookkeeping lives under private ``_archangel_*`` names; the public ones
(``pid``, ``state``, ``manager``...) are read-only views of them, so a
protocol that uses those words for its own data gets a clear error instead of
silently corrupting the manager's table.

This module knows nothing of managers beyond the two calls a process makes on
its own (``manager._exited`` and ``manager._await_hook``); PIDs and tables
live in :mod:`archangel.kernel.manager`.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import logging
import operator
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

from ..errors import InvalidArgument, NotAProcess, ReadOnlyAttribute, coerce_enum
from .records import ExitReason as ExitReason
from .records import ProcessInfo as ProcessInfo
from .records import ProcessState as ProcessState

if TYPE_CHECKING:
    from .manager import ProcessManager

__all__ = ["ExitReason", "Process", "ProcessInfo", "ProcessState"]

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
_time = time.time
_object_new = object.__new__
_object_setattr = object.__setattr__
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Async hooks of processes that have no manager to await them: a strong
# reference until they finish, as asyncio's docs require for such tasks.
_unmanaged_hooks: set[asyncio.Future[Any]] = set()


_NORMAL, _KILLED, _ERROR = ExitReason.NORMAL, ExitReason.KILLED, ExitReason.ERROR
_NEW = ProcessState.NEW
_RUNNING = ProcessState.RUNNING
_EXITED = ProcessState.EXITED

#: The bookkeeping's prefix. Not ``_state``, ``_name`` or ``_hooks``: real
#: protocols use those for their own (telnetlib3, h11 and websockets keep a
#: ``_state``), and a subclass's attribute of the same name would silently
#: overwrite the mixin's. A prefix that names its owner cannot clash by accident.
_PREFIX = "_archangel_"

#: The public names of the bookkeeping: readable, never assignable.
_BOOKKEEPING = ("pid", "manager", "state", "started", "ended", "exit_reason", "error", "parent")

#: Errors a transport passes to ``connection_lost`` when the peer went away
#: abruptly rather than closing: a reset (RST: ``SO_LINGER`` 0, a crashed or
#: impatient client such as wrk or a browser), a write to a connection the peer
#: reset (EPIPE; uvloop also maps ESHUTDOWN here), an abort (ECONNABORTED). Both
#: asyncio's selector transports and uvloop's streams pass these OSErrors on
#: as they come from the socket (``_fatal_error`` then ``_force_close(exc)``).
#: For a server that is the peer's way of hanging up: a normal end.
_PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _peer_gone(exc: BaseException) -> bool:
    """Whether ``exc``, given to ``connection_lost``, only says the peer went away.

    A TCP timeout (ETIMEDOUT: keepalive probes or retransmissions unanswered,
    the peer vanished without a word) counts too; a ``TimeoutError`` without
    that errno (an ``asyncio.timeout`` the protocol let escape) does not.
    """
    return isinstance(exc, _PEER_GONE) or (
        isinstance(exc, TimeoutError) and exc.errno == errno.ETIMEDOUT
    )


def _unmanaged_hook_done(pid: int | None, hook: Any, future: asyncio.Future[Any]) -> None:
    """Forget a finished async hook of a process without a manager; log its failure."""
    _unmanaged_hooks.discard(future)
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("at-exit hook %r of pid %s raised", hook, pid, exc_info=exc)


def _exit_reason(process: Process, reason: ExitReason | str) -> ExitReason:
    return coerce_enum(ExitReason, reason, f"cannot kill {process!r}: reason")


def _read_only(public: str, doc: str) -> property:
    """A read-only view of the bookkeeping attribute ``_archangel_<public>``.

    The getter is an ``operator.attrgetter`` (C, no Python frame), so reading
    ``process.pid`` costs a few nanoseconds more than a plain attribute.
    """

    def refuse_set(self: Process, _value: Any) -> NoReturn:
        raise ReadOnlyAttribute(
            f"cannot set {public!r} on {self!r}: it is archangel's bookkeeping "
            f"(read-only); keep your own data under another name",
            name=public,
            obj=self,
        )

    def refuse_delete(self: Process) -> NoReturn:
        raise ReadOnlyAttribute(
            f"cannot delete {public!r} of {self!r}: it is archangel's bookkeeping "
            f"(read-only), not an attribute of yours",
            name=public,
            obj=self,
        )

    return property(operator.attrgetter(_PREFIX + public), refuse_set, refuse_delete, doc)


def _clash(cls: type) -> None:
    """Refuse a class whose bases or body define a name of the bookkeeping.

    Its own code would assign them (websockets' ``ServerConnection`` sets
    ``self.state``) and get a ``ReadOnlyAttribute``, or read the mixin's
    values where it expects its own; either way neither side works.
    """
    for klass in cls.__mro__:
        if klass is Process or klass is object:
            continue
        names = [n for n in _BOOKKEEPING if n in klass.__dict__]
        if names:
            listed = ", ".join(repr(n) for n in names)
            if klass is cls:
                where = "its own body"
            else:
                base = next(b for b in cls.__bases__ if klass in b.__mro__)
                where = f"its base {base.__qualname__}"
                if base is not klass:
                    where += f" (through {klass.__qualname__})"
            raise NotAProcess(
                f"class {cls.__qualname__} cannot inherit Process: {where} defines "
                f"{listed}, which Process keeps as archangel's bookkeeping (read-only). "
                "Rename it, or keep the class out of Process and let "
                "manager.register(factory) adopt it (any asyncio protocol's factory "
                "works: each product is wrapped in a process proxy)"
            )
    after = cls.__mro__[cls.__mro__.index(Process) + 1 :]
    for klass in after:
        if klass is not object and "__new__" in klass.__dict__:
            # Process.__new__ calls object.__new__ (the fastest), which would
            # skip this base's __new__ silently.
            raise NotAProcess(
                f"class {cls.__qualname__} cannot inherit Process after "
                f"{klass.__qualname__}, which defines __new__: list "
                f"{klass.__qualname__} before Process in the bases"
            )


def _check_count(owner: object, name: object, n: object) -> None:
    """Refuse a user statistic that is not ``inc(name: str, n: number)``.

    Raises:
        InvalidArgument: naming ``owner``, the name and the count.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgument(
            f"{owner!r}: inc() takes a statistic's name, a non-empty string, not {name!r}"
        )
    if isinstance(n, bool) or not isinstance(n, int | float) or n != n or n in (_INF, -_INF):
        raise InvalidArgument(
            f"{owner!r}: inc({name!r}, n) takes a finite number to add, not {n!r}"
        )


_INF = float("inf")


class _Counts:
    """A process's user statistics: its own counts, and its kind's totals it adds to.

    Every count goes to both (``kind`` is the manager's dict for the
    process's kind, None until the process is registered), so the kind's
    totals need nothing at the exit and reading them walks no process.
    """

    __slots__ = ("kind", "own")

    def __init__(self) -> None:
        self.own: dict[str, float] = {}
        self.kind: dict[str, float] | None = None


def _instrumented(fn: _F) -> _F:
    fn._archangel_instrumented = True  # type: ignore[attr-defined]
    return fn


def _wrap_connection_made(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(fn)
    def connection_made(self: Process, transport: Any) -> Any:
        state = self._archangel_state
        if state is _NEW:
            self.transport = transport
            self._archangel_state = _RUNNING
            try:
                return fn(self, transport)
            except BaseException as exc:  # the outermost override: its failure is ours
                self._failed_to_start(transport, exc)
                return None
        if state is _EXITED:
            # Killed between the factory and the transport's first call.
            transport.abort()
            return None
        return fn(self, transport)

    return _instrumented(connection_made)


def _wrap_connection_lost(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(fn)
    def connection_lost(self: Process, exc: BaseException | None) -> Any:
        if self._archangel_ended is not None:  # a super() call from an outer override
            return fn(self, exc)
        self._archangel_ended = _time()
        try:
            return fn(self, exc)
        finally:
            self._exit(None if exc is None or _peer_gone(exc) else exc)

    return _instrumented(connection_lost)


#: What archangel itself writes on a process: they bypass a class's own
#: ``__setattr__`` (see _wrap_setattr).
_DIRECT = frozenset(
    {
        "transport",
        *(_PREFIX + n for n in (*_BOOKKEEPING, "reason", "hooks", "waiters", "name", "stats")),
    }
)


def _wrap_setattr(fn: Callable[[Any, str, Any], None]) -> Callable[[Any, str, Any], None]:
    """Let the bookkeeping's writes bypass a class's own ``__setattr__``.

    A ``__setattr__`` that validates, logs or refuses names is the class's
    business; the mixin's writes (``__new__``'s defaults, the manager's PID)
    must neither run it nor depend on it. Classes without their own
    ``__setattr__`` (nearly all) are not wrapped and pay nothing.
    """

    @functools.wraps(fn)
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if name in _DIRECT:
            _object_setattr(self, name, value)
        else:
            fn(self, name, value)

    return _instrumented(__setattr__)


class Process:
    """Mixin that makes an object a process: PID, state, exit reason, hooks.

    The bookkeeping below is read-only: assigning ``pid``, ``state``,
    ``manager``... raises :class:`~archangel.ReadOnlyAttribute`, and a class
    whose other bases define one of those names cannot inherit the mixin
    (:class:`~archangel.NotAProcess` at class creation: adopt it instead,
    with ``manager.register(factory)``).

    Attributes:
        transport: For protocols, the transport given to ``connection_made``
            (a plain attribute: set it as asyncio protocols usually do).
        kind: A short class-level label (``"conn"``, ``"task"``, ...). Set it
            before registering: the counters count a process under the kind
            it was registered with.
    """

    kind: str = "conn"
    #: Keep :meth:`details` in the history record even after a normal exit
    #: (pipelines keep their counters; connections keep nothing, to stay small).
    keep_details: bool = False

    transport: Any
    _archangel_pid: int | None
    _archangel_manager: ProcessManager | None
    _archangel_state: ProcessState
    _archangel_started: float | None
    _archangel_ended: float | None
    _archangel_exit_reason: ExitReason | None
    _archangel_error: BaseException | None
    _archangel_reason: ExitReason | None
    _archangel_hooks: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] | None
    _archangel_waiters: list[asyncio.Future[None]] | None
    _archangel_name: str | None
    _archangel_parent: Process | None
    #: The process's counts (:meth:`inc`). A class-level default, not one of
    #: ``__new__``'s: a process that never counts pays nothing for it, neither a
    #: store per connection nor room in its attributes; the first ``inc`` makes
    #: them.
    _archangel_stats: _Counts | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Every default, always in this order (the order the accept path
        # first touches them): CPython then lays out the attributes of all
        # instances of a class as compact values under keys the class shares,
        # from its first instance on. An instance gets room only for the keys
        # its class knows when the instance is made, so a key first set later
        # (the first connection_made of a burst) may not fit and the instance
        # falls back to a full dict: 421 instead of 277 bytes per connection
        # (benchmarks/echo.py). The cost: about 200 ns to build a process (a
        # Python __new__ call and 13 stores), of which the register-to-exit
        # cycle keeps about 60 ns (1.03 against 0.97 us, benchmarks/kernel.py):
        # instance attributes read faster than class-level defaults. The
        # arguments are the constructor's, for __init__; not ours to check.
        self = _object_new(cls)
        self._archangel_pid = None
        self._archangel_manager = None
        self._archangel_state = _NEW
        self._archangel_started = None
        self.transport = None
        self._archangel_ended = None
        self._archangel_exit_reason = None
        self._archangel_error = None
        self._archangel_reason = None
        self._archangel_hooks = None
        self._archangel_waiters = None
        self._archangel_name = None
        self._archangel_parent = None
        return self

    if TYPE_CHECKING:  # the read-only views, as type checkers should see them

        @property
        def pid(self) -> int | None: ...
        @property
        def manager(self) -> ProcessManager | None: ...
        @property
        def state(self) -> ProcessState: ...
        @property
        def started(self) -> float | None: ...
        @property
        def ended(self) -> float | None: ...
        @property
        def exit_reason(self) -> ExitReason | None: ...
        @property
        def error(self) -> BaseException | None: ...
        @property
        def parent(self) -> Process | None: ...

    else:
        pid = _read_only("pid", "Assigned by :meth:`ProcessManager.register`; None until then.")
        manager = _read_only("manager", "The manager that registered the process, or None.")
        state = _read_only("state", "A :class:`ProcessState`.")
        started = _read_only("started", "Wall-clock time of registration (``time.time()``).")
        ended = _read_only("ended", "Wall-clock time the process began to exit, else None.")
        exit_reason = _read_only("exit_reason", "An :class:`ExitReason` once exited, else None.")
        error = _read_only(
            "error",
            "The exception that ended the process, if any. Once the manager's "
            "history records it, the variables of its traceback's finished frames "
            "are cleared (so the record keeps no protocol alive); files and lines "
            "remain.",
        )
        parent = _read_only(
            "parent",
            "The process that started this one and stops it (a "
            ":class:`~archangel.Supervisor`), or None.",
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _clash(cls)
        # Whatever connection_made/connection_lost the class resolves to (its
        # own, a base's, or asyncio.Protocol's no-op when the bases are in the
        # other order), make sure the bookkeeping wraps it exactly once.
        made = cls.connection_made
        if not getattr(made, "_archangel_instrumented", False):
            cls.connection_made = _wrap_connection_made(made)  # type: ignore[method-assign,assignment]
        lost = cls.connection_lost
        if not getattr(lost, "_archangel_instrumented", False):
            cls.connection_lost = _wrap_connection_lost(lost)  # type: ignore[method-assign,assignment]
        setattr_ = cls.__setattr__
        if setattr_ is not _object_setattr and not getattr(
            setattr_, "_archangel_instrumented", False
        ):
            cls.__setattr__ = _wrap_setattr(setattr_)  # type: ignore[method-assign]

    # -- identity ---------------------------------------------------------

    @property
    def name(self) -> str:
        """A label for listings; defaults to the class name. Settable."""
        return self._archangel_name or type(self).__name__

    @name.setter
    def name(self, value: str | None) -> None:
        self._archangel_name = value

    def __repr__(self) -> str:
        reason = self._archangel_exit_reason
        ending = f" {reason.value}" if reason else ""
        state = self._archangel_state.value
        return f"<{self.name} pid={self._archangel_pid} {self.kind} [{state}{ending}]>"

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

    # -- user statistics ------------------------------------------------------

    def inc(self, name: str, n: float = 1) -> None:
        """Count ``n`` more of the event ``name``: the process's own statistics.

        pyzenkit's ``inc_statistic``. The counts show in :meth:`statistics`,
        in the manager's :attr:`~ProcessManager.counters` (summed per kind,
        under ``kinds[kind]["user"]``), so in the runlog with their rates, the
        state dump and the console's ``stats``. Each count of a registered
        process goes to its kind's totals as it is made, so the totals keep
        it once the process has exited (counts made after the exit, in an
        at-exit hook, say, too). Counts made before the process is
        registered join the totals when it is registered with
        ``manager.register(process)`` or ``spawn``, or at its next count.

        Raises:
            InvalidArgument: ``name`` is not a non-empty string, or ``n`` is
                not a finite number (a bool is not a number here).
        """
        counts = self._archangel_stats
        if counts is not None and type(n) is int:
            kind = counts.kind
            own = counts.own
            if kind is not None and name in own:  # then ``kind`` has ``name`` too
                own[name] += n
                kind[name] += n
                return
        self._inc_slowly(name, n)

    def _inc_slowly(self, name: str, n: float) -> None:
        """:meth:`inc` off its fast path: check, make the counts, join the kind's totals."""
        _check_count(self, name, n)
        counts = self._archangel_stats
        if counts is None:
            counts = _Counts()
            _object_setattr(self, _PREFIX + "stats", counts)
        own = counts.own
        own[name] = own.get(name, 0) + n
        if counts.kind is None:
            manager = self._archangel_manager
            if manager is not None:  # registered since its last count: join the kind's totals
                manager._join_kind(self)
            return
        kind = counts.kind
        kind[name] = kind.get(name, 0) + n

    def statistics(self) -> dict[str, float]:
        """What :meth:`inc` counted, ``{name: count}`` (a copy; empty if nothing)."""
        counts = self._archangel_stats
        return counts.own.copy() if counts is not None else {}

    def info(self) -> ProcessInfo:
        """A :class:`ProcessInfo` snapshot; ``details`` names the parent's PID, if any."""
        details = self.details()
        parent = self._archangel_parent
        if parent is not None:
            details = {**details, "parent": parent._archangel_pid}
        return ProcessInfo(
            self._archangel_pid,
            self.kind,
            self.name,
            self._archangel_state,
            self._archangel_started,
            self._archangel_ended,
            self._archangel_exit_reason,
            self._archangel_error,
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
        :meth:`ProcessManager.shutdown` waits for it, up to its timeout), or,
        for a process without a manager, run as a task; its failure is logged
        with the PID too. Returns ``fn``, so it works as a decorator.
        Registering on an exited process runs the hook at once.
        """
        if self._archangel_state is _EXITED:
            interrupt = self._run_hook(fn, args, kwargs)
            if interrupt is not None:
                raise interrupt
            return fn
        if self._archangel_hooks is None:
            self._archangel_hooks = []
        self._archangel_hooks.append((fn, args, kwargs))
        return fn

    @property
    def pending_hooks(self) -> int:
        """How many at-exit hooks are registered and have not run yet."""
        hooks = self._archangel_hooks
        return len(hooks) if hooks is not None else 0

    def _run_hook(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> BaseException | None:
        """Run one hook, logging what it raises; return an interrupt to raise again."""
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            logger.exception("at-exit hook %r of pid %s raised", fn, self._archangel_pid)
            return exc if isinstance(exc, KeyboardInterrupt | SystemExit) else None
        if result is not None and isinstance(result, Awaitable):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                logger.error(
                    "at-exit hook %r of pid %s returned an awaitable, but no event loop "
                    "is running to await it",
                    fn,
                    self._archangel_pid,
                )
                if inspect.iscoroutine(result):
                    result.close()  # no "never awaited" warning
                return None
            manager = self._archangel_manager
            if manager is not None:
                manager._await_hook(self, fn, result)
            else:
                future = asyncio.ensure_future(result)
                _unmanaged_hooks.add(future)
                future.add_done_callback(
                    functools.partial(_unmanaged_hook_done, self._archangel_pid, fn)
                )
        return None

    # -- ending ---------------------------------------------------------------

    def kill(self, reason: ExitReason | str = ExitReason.KILLED) -> None:
        """End the process now: a protocol aborts its transport.

        The exit is recorded with ``reason`` once the process has actually
        ended (for a protocol, when ``connection_lost`` runs). Killing an
        exited process does nothing.
        """
        if self._archangel_state is _EXITED or self._archangel_ended is not None:
            return
        self._archangel_reason = checked = _exit_reason(self, reason)
        self.on_kill(checked)

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
        if self._archangel_state is not _EXITED and self._archangel_ended is None:
            if self._archangel_reason is None:
                self._archangel_reason = ExitReason.SHUTDOWN
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
        if self._archangel_state is _EXITED:
            return
        future = asyncio.get_running_loop().create_future()
        if self._archangel_waiters is None:
            self._archangel_waiters = []
        self._archangel_waiters.append(future)
        await future

    def _exit(self, exc: BaseException | None) -> None:
        """Record the exit, tell the manager, run the hooks. Runs once."""
        if self._archangel_state is _EXITED:
            return
        if self._archangel_ended is None:
            self._archangel_ended = _time()
        self._archangel_state = _EXITED
        reason = self._archangel_reason
        if reason is None or (exc is not None and reason is not _KILLED):
            if exc is None:
                reason = _NORMAL
            else:
                reason = _ERROR
                self._archangel_error = exc
        self._archangel_exit_reason = reason
        manager = self._archangel_manager
        if manager is not None:
            manager._exited(self, reason)
        interrupt = None
        hooks = self._archangel_hooks
        if hooks is not None:
            self._archangel_hooks = None
            for fn, args, kwargs in reversed(hooks):
                raised = self._run_hook(fn, args, kwargs)
                if raised is not None and interrupt is None:
                    interrupt = raised
        waiters = self._archangel_waiters
        if waiters is not None:
            self._archangel_waiters = None
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        if interrupt is not None:  # a hook's KeyboardInterrupt or SystemExit, once all ran
            raise interrupt

    def _failed_to_start(self, transport: Any, exc: BaseException) -> None:
        """``connection_made`` raised: record the failure, abort the transport.

        Neither loop cleans up after a raising ``connection_made``: asyncio
        logs it and reads on, uvloop logs it and never reads, so the
        connection (and its fd, and the table's entry) would stay until the
        peer gives up, or forever. The failure is logged here, once, with the
        PID, and not raised into the loop (which would log it a second time),
        unless it is a ``KeyboardInterrupt`` or ``SystemExit``.
        """
        logger.error(
            "pid %s (%s): connection_made raised; aborting its transport",
            self._archangel_pid,
            self.name,
            exc_info=exc,
        )
        try:
            transport.abort()
        finally:
            # The transport calls connection_lost later (the user's runs then,
            # as asyncio promises); the process has ended now.
            self._archangel_ended = _time()
            self._exit(exc)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise exc

    # -- protocol hooks (instrumented: bookkeeping needs no super() call) -----

    @_instrumented
    def connection_made(self, transport: Any) -> None:
        """Record the transport and mark the process running."""
        state = self._archangel_state
        if state is _NEW:
            self.transport = transport
            self._archangel_state = _RUNNING
        elif state is _EXITED:
            transport.abort()

    @_instrumented
    def connection_lost(self, exc: BaseException | None) -> None:
        """Mark the process exited and run its hooks.

        The exit reason is ``ERROR`` (with ``exc`` in :attr:`error`) for a
        transport error, but a peer that went away abruptly (a reset, a broken
        pipe, a TCP timeout) ends the process normally: that is how clients
        hang up.
        """
        # With ``ended`` already set, an instrumented override is running and
        # called super(): it exits the process itself once its body is done.
        if self._archangel_ended is not None:
            return
        self._archangel_ended = _time()
        manager = self._archangel_manager
        if (
            exc is None
            and manager is not None
            and self._archangel_reason is None
            and self._archangel_hooks is None
            and self._archangel_waiters is None
        ):
            # The usual end of a connection, a frame shorter than _exit (the
            # path every connection takes; benchmarks/echo.py): the same
            # outcome as _exit when there is nothing else to do.
            self._archangel_state = _EXITED
            self._archangel_exit_reason = _NORMAL
            manager._exited(self, _NORMAL)
            return
        self._exit(None if exc is None or _peer_gone(exc) else exc)


class _Exited:
    """Awaitable returned by :meth:`Process.stop`: waits for the exit when awaited."""

    __slots__ = ("_process",)

    def __init__(self, process: Process) -> None:
        self._process = process

    def __await__(self) -> Generator[Any, None, None]:
        return self._process.wait().__await__()
