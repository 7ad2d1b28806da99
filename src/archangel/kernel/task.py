"""``TaskProcess``: a coroutine run as a process, what ``ProcessManager.spawn`` makes.

Pipelines and supervisors subclass it and override :meth:`TaskProcess.main`.
No I/O here; the manager assigns the PID and this module runs the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from ..errors import ProcessStateError
from .frames import innermost
from .process import _EMPTY, _RUNNING, ExitReason, Process

__all__ = ["TaskProcess"]

logger = logging.getLogger(__name__)


class TaskProcess(Process):
    """A coroutine run as a process (kind ``"task"``): what ``spawn`` creates.

    Subclasses (a pipeline, a supervisor) override :meth:`main` instead of
    passing a coroutine. ``kill`` and ``stop`` cancel the task; override
    :meth:`on_stop` to end more gently. The coroutine's return value is kept
    in :attr:`result`.

    A coroutine that raises :class:`asyncio.CancelledError` on its own (not
    through ``kill`` or ``stop``: a ``raise CancelledError``, a cancelled
    inner task's error let through, ``process.task.cancel()`` from outside)
    exits ``error`` with that ``CancelledError`` in :attr:`error`, and is
    counted as failed: ``killed`` is kept for ``kill()``.
    """

    kind = "task"

    task: asyncio.Task[Any] | None = None
    #: The coroutine's return value, once it returned (None until then).
    result: Any = None
    _coro: Coroutine[Any, Any, Any] | None = None

    def __init__(self, coro: Coroutine[Any, Any, Any] | None = None, *, name: str | None = None):
        self._coro = coro
        if name is not None:
            self.name = name
        elif coro is not None:
            self.name = getattr(coro, "__qualname__", None) or type(self).__name__

    async def main(self) -> Any:
        """The work of the process; by default the coroutine given at creation."""
        coro, self._coro = self._coro, None
        if coro is None:
            raise NotImplementedError(f"{self!r} has no coroutine and does not override main()")
        return await coro

    def start(self) -> asyncio.Task[Any]:
        """Start :meth:`main` as a task on the running loop (``spawn`` calls this)."""
        if self.task is not None:
            raise ProcessStateError(f"{self!r} has already been started")
        loop = asyncio.get_running_loop()  # raises before anything changes
        self._archangel_state = _RUNNING
        self.task = loop.create_task(self.main(), name=self.name)
        self.task.add_done_callback(self._task_done)
        return self.task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        # A done callback, not a try/except inside the task: a task cancelled
        # before its first step never enters its own code.
        if self._coro is not None:  # main() never ran: no "never awaited" warning
            self._coro.close()
            self._coro = None
        if task.cancelled():
            if self._archangel_reason is not None:  # kill() or stop() cancelled it
                self._exit(None)
                return
            # Nobody here asked for it: the coroutine raised CancelledError on
            # its own (or someone cancelled ``process.task`` directly). Not a
            # kill(), which the exit reason "killed" is kept for: it failed,
            # with that CancelledError (the coroutine's own, with its traceback).
            exc: BaseException | None = asyncio.CancelledError()
            try:
                task.result()
            except asyncio.CancelledError as cancelled:
                exc = cancelled
            logger.error(
                "pid %s (%s) failed: cancelled, not by kill() or stop()",
                self._archangel_pid,
                self.name,
                exc_info=exc,
            )
            self._exit(exc)
            return
        exc = task.exception()
        if exc is None:
            self.result = task.result()
        elif isinstance(exc, Exception):
            logger.error("pid %s (%s) failed", self._archangel_pid, self.name, exc_info=exc)
        self._exit(exc)

    def details(self) -> Mapping[str, Any]:
        """The task's name and, while it runs, where it is waiting."""
        task = self.task
        if task is None or task.done():
            return _EMPTY
        return {"task": task.get_name(), "where": innermost(task.get_coro())}

    def on_kill(self, reason: ExitReason) -> None:
        """Cancel the task (or exit at once if it never started)."""
        self._cancel()

    def on_stop(self) -> None:
        """Cancel the task; subclasses finish their work first instead."""
        self._cancel()

    def _cancel(self) -> None:
        if self.task is None:
            if self._coro is not None:
                self._coro.close()
                self._coro = None
            self._exit(None)
        else:
            self.task.cancel()
