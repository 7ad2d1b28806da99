"""The errors archangel raises.

One base, :class:`ArchangelError`; each concrete error also subclasses the
builtin it resembles, so ``except LookupError`` keeps working for callers who
do not know archangel. Messages name the object and its state.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRegistered",
    "ArchangelError",
    "ConsoleError",
    "DaemonError",
    "InvalidTransition",
    "ManagerClosed",
    "NotAProcess",
    "NotRegistered",
    "PidFileError",
    "ProcessStateError",
]


class ArchangelError(Exception):
    """Base class of every error archangel raises on purpose."""


class NotRegistered(ArchangelError, LookupError):
    """A PID that the manager does not know (never issued, or already exited)."""


class AlreadyRegistered(ArchangelError, ValueError):
    """A process handed to ``register`` that already has a PID."""


class ManagerClosed(ArchangelError, RuntimeError):
    """An operation that needs an open manager, after ``shutdown()`` began."""


class NotAProcess(ArchangelError, TypeError):
    """Something that is neither a process nor a callable factory of processes."""


class ProcessStateError(ArchangelError, RuntimeError):
    """An operation that the process's current state does not allow."""


class InvalidTransition(ArchangelError, ValueError):
    """A state that cannot be reached from the current one."""


class DaemonError(ArchangelError, OSError):
    """Daemonizing, dropping privileges or a pidfile operation failed."""


class PidFileError(DaemonError):
    """A pidfile is missing, malformed, stale, unreadable or held by a live process."""


class ConsoleError(ArchangelError, RuntimeError):
    """The management console could not start or was used wrongly."""
