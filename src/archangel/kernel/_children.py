"""A supervisor's children: their records, looking one up, stopping them last first.

The table half of :class:`~archangel.Supervisor`: a :class:`Child` per spec
(or, in a template supervisor, per ``start_child`` call), kept in start
order in a plain list that the supervisor owns and changes only from its own
task. No decisions here (which child restarts, when the supervisor gives
up): those are :mod:`archangel.kernel.supervisor`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ChildNotFound
from .childspec import ChildSpec
from .manager import KILL_GRACE, _kill
from .process import _EXITED, Process

__all__ = ["Child", "find", "kill_children", "stop_children"]

logger = logging.getLogger("archangel.kernel.supervisor")  # one logger for the supervisor


class Child:
    """One child of a supervisor: its spec and, while it runs, its process."""

    __slots__ = ("args", "id", "ignored", "kwargs", "process", "retry", "spec")

    def __init__(
        self,
        spec: ChildSpec,
        child_id: str | None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.id = child_id  # None for a template supervisor's children
        self.args = args
        self.kwargs: Mapping[str, Any] = kwargs or {}
        self.process: Process | None = None
        self.ignored = False  # its factory answered IGNORE at its last start
        # Its factory raised at a restart: an event is queued to try again
        # (and count it). A start or a terminate_child meanwhile cancels that.
        self.retry = False

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.process is not None and self.process.state is not _EXITED

    def __repr__(self) -> str:
        process = self.process
        if self.running:
            status = f"running as pid {process.pid}"  # type: ignore[union-attr]
        elif self.retry:
            status = "restarting (its factory raised)"
        else:
            status = "ignored (its factory answered IGNORE)" if self.ignored else "terminated"
        label = repr(self.id) if self.id is not None else f"pid {getattr(process, 'pid', None)}"
        return f"child {label} [{status}]"


def find(owner: object, children: Sequence[Child], ref: str | int | Process) -> Child:
    """The child of ``owner`` that ``ref`` names: its id, its process or its PID.

    Raises:
        ChildNotFound: None does; the message lists the ids there are.
    """
    for child in children:
        if isinstance(ref, Process):
            if child.process is ref:
                return child
        elif isinstance(ref, str):
            if child.id == ref:
                return child
        elif child.process is not None and child.process.pid == ref:
            return child
    ids = ", ".join(repr(c.id) for c in children if c.id is not None)
    known = f" (its children: {ids})" if ids else ""
    raise ChildNotFound(f"{owner!r} has no child {ref!r}{known}")


async def stop_children(owner: object, children: Sequence[Child]) -> None:
    """Stop the live ``children`` of ``owner`` one at a time, the last first.

    Each gets its spec's ``shutdown`` seconds after ``stop()``, then is
    killed; one whose ``stop()`` raises is killed at once. Cancelled, it
    kills the rest at once.
    """
    order = list(reversed(children))
    try:
        for child in order:
            process = child.process
            if process is None or process.state is _EXITED:
                child.process = None
                continue
            shutdown = child.spec.shutdown
            try:
                async with asyncio.timeout(shutdown):
                    await process.stop()
            except TimeoutError:
                logger.warning(
                    "%r: pid %s (%s) still running %g s after stop(); killing it",
                    owner,
                    process.pid,
                    process.name,
                    shutdown,
                )
                _kill(process)
                await _gone(process)
            except Exception:
                # Its on_stop() failed: it must not outlive the supervisor,
                # nor keep the children started before it running.
                logger.exception(
                    "%r: stop() of pid %s (%s) raised; killing it",
                    owner,
                    process.pid,
                    process.name,
                )
                _kill(process)
                await _gone(process)
            child.process = None
    except asyncio.CancelledError:
        await kill_children(order)
        raise


async def kill_children(children: Sequence[Child]) -> None:
    """Kill the live ``children`` at once; wait (bounded) until they are gone."""
    killed = []
    for child in children:
        process, child.process = child.process, None
        if process is not None and process.state is not _EXITED:
            _kill(process)
            killed.append(process)
    for process in killed:
        await _gone(process)


async def _gone(child: Process) -> None:
    """Wait for a killed child to exit, at most ``KILL_GRACE`` seconds."""
    try:
        async with asyncio.timeout(KILL_GRACE):
            await child.wait()
    except TimeoutError:
        logger.error("pid %s did not exit %g s after kill()", child.pid, KILL_GRACE)
