"""What the web endpoints read: a manager, or an App seen through a :class:`typing.Protocol`.

The web layer never imports the app or the bus (``tests/test_layers.py``):
an App is duck-typed here, the attributes read are the ones listed in
:class:`AppLike`, and each is read with a default so that a manager on its
own (no lifecycle, no dumps) serves the same endpoints with less in them.

Every read here is safe from the web's thread while the app's loop runs
or is blocked: attribute reads, ``len`` and the manager's snapshots
(:attr:`~archangel.ProcessManager.counters`,
:meth:`~archangel.ProcessManager.processes`). Nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ..errors import WebError
from ..kernel.manager import ProcessManager

__all__ = ["AppLike", "app_counts", "lifecycle", "unwrap"]


@runtime_checkable
class AppLike(Protocol):
    """The attributes of an App the web endpoints read (all optional but ``manager``).

    ``name`` (a label), ``manager``, ``bus`` (its ``state`` an enum member
    of the lifecycle), ``stopping`` (True from the first stop request),
    ``reload_count`` and ``dump_counts`` (``{"state": n, "runlog": n}``).
    """

    @property
    def manager(self) -> ProcessManager:
        """The manager whose processes are reported."""


def unwrap(target: Any) -> tuple[ProcessManager, Any]:
    """``(manager, app or None)`` for a :class:`~archangel.ProcessManager` or an App.

    Raises:
        WebError: ``target`` is neither.
    """
    if isinstance(target, ProcessManager):
        return target, None
    manager = getattr(target, "manager", None)
    if isinstance(manager, ProcessManager):
        return manager, target
    raise WebError(f"web target {target!r} is neither a ProcessManager nor an App with a .manager")


def lifecycle(app: Any) -> tuple[str | None, list[str], bool]:
    """``(state name, every state name, stopping)`` of an App's lifecycle.

    ``(None, [], False)`` for no app, or one without a bus. The state names
    are the members of the state's enum, so a custom graph reports its own.
    """
    bus = getattr(app, "bus", None) if app is not None else None
    state = getattr(bus, "state", None)
    if state is None:
        return None, [], False
    name = getattr(state, "name", str(state))
    members = [m.name for m in type(state)] if hasattr(type(state), "__members__") else [name]
    return name, members, bool(getattr(app, "stopping", False))


def app_counts(app: Any) -> tuple[int | None, Mapping[str, int]]:
    """``(reloads, dumps written by kind)`` an App has counted (None and {} if it does not)."""
    if app is None:
        return None, {}
    reloads = getattr(app, "reload_count", None)
    dumps = getattr(app, "dump_counts", None)
    return (
        reloads if isinstance(reloads, int) else None,
        dict(dumps) if isinstance(dumps, Mapping) else {},
    )
