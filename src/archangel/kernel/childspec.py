"""Child specs: how a :class:`~archangel.Supervisor` starts, restarts and stops a child.

Plain data and the words of OTP's child specifications (restart types,
strategies, the ``IGNORE`` answer); no asyncio here. The supervisor that
acts on them is :mod:`archangel.kernel.supervisor`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, Final

from ..errors import InvalidArgument, NotCallable, coerce_enum

__all__ = ["IGNORE", "ChildSpec", "Restart", "Strategy"]


class Restart(enum.StrEnum):
    """When a supervisor restarts a child that exited."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """After an abnormal exit only (an error or a kill)."""
    TEMPORARY = "temporary"
    """Never; once it has exited, the child is gone from the supervisor."""


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one of them must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    """That child only."""
    ONE_FOR_ALL = "one_for_all"
    """Every child; the others are stopped in reverse order, then all start in order."""
    REST_FOR_ONE = "rest_for_one"
    """That child and the children started after it."""


class _Ignore(enum.Enum):
    IGNORE = "IGNORE"

    def __repr__(self) -> str:
        return "archangel.IGNORE"


#: What a child's factory returns to answer "ignore", as OTP's ``ignore`` does.
#: The child is not started and the supervisor keeps its spec (a template
#: supervisor adds no child); ``restart_child`` may try again later.
IGNORE: Final = _Ignore.IGNORE


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    Args:
        factory: Called at every (re)start; returns what
            :meth:`ProcessManager.spawn` takes: a coroutine (an async
            function works as the factory) or a :class:`TaskProcess`, or
            :data:`IGNORE` to leave the child unstarted. Called with no
            arguments, except in a template supervisor, where it gets the
            arguments given to ``start_child``.
        name: The child's id in its supervisor, and its process name; by
            default the id is the factory's name (the last part of its
            ``__qualname__``) and the process name the one ``spawn`` gives
            (a coroutine's function name, a task process's own name).
        restart: A :class:`Restart` or its value.
        shutdown: Seconds the child gets to end after ``stop()`` before it
            is killed.
    """

    factory: Callable[..., Any]
    name: str | None = None
    restart: Restart | str = Restart.PERMANENT
    shutdown: float = 5.0

    def __post_init__(self) -> None:
        factory: object = self.factory
        if not callable(factory):
            hint = (
                ": give each child as its own argument, Supervisor(*children)"
                if isinstance(factory, list | tuple)
                else ""
            )
            raise NotCallable(f"ChildSpec factory {factory!r} is not callable{hint}")
        object.__setattr__(
            self, "restart", coerce_enum(Restart, self.restart, "ChildSpec restart")
        )
        if not self.shutdown >= 0:
            raise InvalidArgument(f"ChildSpec shutdown must be >= 0 s, got {self.shutdown!r}")

    @property
    def id(self) -> str:
        """The child's id in its supervisor, ``name`` or else the factory's name."""
        if self.name is not None:
            return self.name
        qualname = getattr(self.factory, "__qualname__", None)
        if isinstance(qualname, str):
            return qualname.rpartition(".")[2]
        return type(self.factory).__name__
