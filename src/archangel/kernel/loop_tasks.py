"""Every asyncio task of a loop, read cheaply and from any thread.

:func:`asyncio.all_tasks` copies asyncio's ``WeakSet`` of tasks in Python,
retrying when it changes under it: with 100,000 tasks that is one call of
about 50 ms, all of it holding the loop (a state dump) or the GIL (the
console). Here the set under the ``WeakSet`` is copied in one C call (about
2 ms at 100,000) and each weak reference is followed later, by the caller, in
steps as small as it likes. Python versions that keep their tasks otherwise
fall back to :func:`asyncio.all_tasks`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from typing import Any

__all__ = ["live_refs", "task_refs", "tasks_of"]


def task_refs() -> list[weakref.ref[asyncio.Task[Any]]]:
    """Weak references to every task of every loop, copied in one atomic step.

    asyncio keeps its tasks in a ``WeakSet`` (``asyncio.tasks._all_tasks``;
    ``_scheduled_tasks`` and ``_eager_tasks`` from 3.12): ``list()`` of its
    underlying set is one C call, which no other thread can interleave with.
    Empty when this Python keeps its tasks otherwise (see :func:`tasks_of`).
    """
    refs: list[Any] = []
    for attr in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        registry = getattr(asyncio.tasks, attr, None)
        data = getattr(registry, "data", None)
        if isinstance(data, set):
            refs.extend(list(data))
        elif isinstance(registry, set):
            refs.extend(weakref.ref(task) for task in list(registry))
    return refs


def live_refs(
    loop: asyncio.AbstractEventLoop, refs: list[weakref.ref[asyncio.Task[Any]]] | None = None
) -> Iterator[weakref.ref[asyncio.Task[Any]]]:
    """The references in ``refs`` (by default :func:`task_refs`) to tasks on ``loop`` not done.

    Lazily: a caller that yields to the loop between items takes them in
    steps. A task that ends meanwhile is skipped if it has ended by the time
    it is reached; the task of the reference just given is alive until the
    next one is asked for. Keeping these references (asyncio's own) costs
    nothing new, where a new weak reference per task would be one more
    object per task for the garbage collector.
    """
    refs = task_refs() if refs is None else refs
    if not refs:
        refs = [weakref.ref(task) for task in list(asyncio.all_tasks(loop))]
    for ref in refs:
        task = ref()
        if task is not None and task.get_loop() is loop and not task.done():
            yield ref


def tasks_of(
    loop: asyncio.AbstractEventLoop, refs: list[weakref.ref[asyncio.Task[Any]]] | None = None
) -> Iterator[asyncio.Task[Any]]:
    """The tasks on ``loop`` that are not done, from ``refs`` (as :func:`live_refs` picks them)."""
    for ref in live_refs(loop, refs):
        task = ref()
        if task is not None:
            yield task
