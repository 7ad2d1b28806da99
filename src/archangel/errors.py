"""The errors archangel raises.

One base, :class:`ArchangelError`; each concrete error also subclasses the
builtin it resembles, so ``except LookupError`` keeps working for callers who
do not know archangel. Messages name the object and its state.
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Hashable, Sequence
from typing import TypeVar

__all__ = [
    "AlreadyRegistered",
    "ArchangelError",
    "ChannelFailures",
    "ChildNotFound",
    "ConsoleError",
    "DaemonError",
    "DuplicateChild",
    "FrameworkError",
    "InvalidArgument",
    "InvalidTransition",
    "ManagerClosed",
    "NotAProcess",
    "NotCallable",
    "NotRegistered",
    "PidFileError",
    "PidFileUnusable",
    "ProcessStateError",
    "ReadOnlyAttribute",
    "RestartLimitExceeded",
    "WatcherClosed",
    "WebError",
]


_E = TypeVar("_E", bound=enum.Enum)


class ArchangelError(Exception):
    """Base class of every error archangel raises on purpose."""


class InvalidArgument(ArchangelError, ValueError):
    """An argument outside what the call accepts (an unknown exit reason, say)."""


class NotCallable(InvalidArgument, TypeError):
    """A callback, factory or cog argument that cannot be called.

    An :class:`InvalidArgument` that is also the ``TypeError`` Python raises
    for the same mistake, so either ``except`` catches it.
    """


class NotRegistered(ArchangelError, LookupError):
    """A PID that the manager does not know (never issued, or already exited)."""


class AlreadyRegistered(ArchangelError, ValueError):
    """A process handed to ``register`` that already has a PID."""


class ManagerClosed(ArchangelError, RuntimeError):
    """An operation that needs an open manager, after ``shutdown()`` began."""


class NotAProcess(ArchangelError, TypeError):
    """Something that is neither a process nor a callable factory of processes.

    Also raised when a class is created that cannot be a process: one whose
    other bases (or its own body) define a name of the mixin's bookkeeping,
    such as a library protocol with its own ``state``. Such protocols are
    adopted instead (``manager.register(factory)``).
    """


class ReadOnlyAttribute(ArchangelError, AttributeError):
    """An assignment to (or ``del`` of) a process's bookkeeping (``pid``, ``state``...).

    Those attributes are archangel's and read-only; ``name`` names the one
    assigned or deleted and ``obj`` the process, as for any ``AttributeError``.
    """


class ProcessStateError(ArchangelError, RuntimeError):
    """An operation that the process's current state does not allow."""


class InvalidTransition(ArchangelError, ValueError):
    """A state that cannot be reached from the current one."""


class DaemonError(ArchangelError, OSError):
    """Daemonizing, dropping privileges or a pidfile operation failed."""


class PidFileError(DaemonError):
    """A pidfile is missing, malformed, stale, unreadable or held by a live process."""


class FrameworkError(ArchangelError, RuntimeError):
    """A framework to serve (aiohttp, uvicorn, websockets) is missing or failed to start."""


class ConsoleError(ArchangelError, RuntimeError):
    """The management console could not start or was used wrongly."""


class WebError(ArchangelError, RuntimeError):
    """The web endpoints (metrics, probes) could not start or were set up wrongly."""


class PidFileUnusable(PidFileError):
    """A pidfile that cannot be used, with the reason as a short word.

    ``reason`` is ``"missing"``, ``"malformed"``, ``"stale"``, ``"permission"``
    (reading the file or signalling its process was denied), ``"held"``
    (another live process holds it) or ``"io"`` (another operating-system
    error), so a command line can give each its own exit status. ``path`` is
    the pidfile and ``pid`` the PID it names, when known.
    """

    def __init__(
        self, message: str, *, reason: str = "io", path: str = "", pid: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path
        self.pid = pid


class ChannelFailures(ExceptionGroup[Exception], ArchangelError):
    """The exceptions raised by the subscribers of a bus channel, raised after all of them ran.

    An :class:`ExceptionGroup`, so ``except* OSError`` picks out the failures it
    knows. :attr:`channel` is the channel whose subscribers failed (None for a
    failed transition, whose :attr:`~BaseExceptionGroup.exceptions` are the ``ChannelFailures`` of
    each state that failed).
    """

    #: The channel whose subscribers failed (None for a failed transition).
    channel: Hashable

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], channel: Hashable = None
    ) -> ChannelFailures:
        self = super().__new__(cls, message, exceptions)
        self.channel = channel
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], channel: Hashable = None
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> ChannelFailures:  # type: ignore[override]
        """Keep the type and the channel when ``except*`` or ``split`` regroups."""
        return ChannelFailures(self.message, excs, self.channel)


class RestartLimitExceeded(ArchangelError, RuntimeError):
    """A supervisor's children needed more restarts than its limit allows in its window."""


class ChildNotFound(ArchangelError, LookupError):
    """A supervisor has no child of that id (or that process, or that PID)."""


class DuplicateChild(ArchangelError, ValueError):
    """``start_child`` with the id of a child the supervisor already has (running or not)."""


class WatcherClosed(ArchangelError, RuntimeError):
    """A watcher or a watch used after ``close()``."""


def coerce_enum(enum_type: type[_E], value: object, what: str) -> _E:
    """``enum_type(value)``, or :class:`InvalidArgument` naming ``what`` and the choices.

    The one place an enum argument given as its value (``"one_for_all"``,
    ``"killed"``) is checked: ``what`` says whose argument it is, e.g.
    ``"Supervisor 'feeds': strategy"``.
    """
    try:
        return enum_type(value)
    except ValueError:
        expected = ", ".join(repr(member.value) for member in enum_type)
        raise InvalidArgument(f"{what} must be one of {expected}, got {value!r}") from None


def check_number(value: object, what: str, *, integer: bool = False) -> None:
    """Raise :class:`InvalidArgument` unless ``value`` is a number ``>= 0``.

    A real number (an ``int`` when ``integer``), not a bool and not NaN;
    ``what`` says whose argument it is, e.g. ``"App 'web': shutdown_timeout"``,
    and the message quotes the value given (``'30'``, ``True``, ``-1``).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or (integer and not isinstance(value, numbers.Integral))
    ):
        expected = "an int" if integer else "a number of seconds"
        raise InvalidArgument(f"{what} must be {expected} >= 0, got {value!r}")
    if math.isnan(value) or value < 0:
        raise InvalidArgument(f"{what} must be >= 0, got {value!r}")


def check_callable(value: object, what: str) -> None:
    """Raise :class:`NotCallable` unless ``value`` is callable.

    ``what`` says whose argument it is and what it is for, e.g.
    ``"Bus: every(0.5, ...)'s callback"``; the message quotes the value given.
    """
    if not callable(value):
        raise NotCallable(f"{what} must be callable, got {value!r}")
