"""Background-task holders and waiter lists, written once for the code off the hot path.

Two small ideas that several modules need:

* **a task holder**: asyncio keeps only a weak reference to a task, so a
  task nobody awaits may be collected while it runs; :func:`hold` keeps it
  in a set of its owner's until it is done (the App's background work and
  reloads, the dumps' writes);
* **a waiter list**: futures parked until something changes; :func:`park`
  waits on one or several lists and leaves its future in none of them on
  the way out, :func:`wake_all` resolves every future parked (the watches of
  :mod:`archangel.pipes.watch`, the line server's consumer).

The hot paths keep their own, hand-written: a process's waiters
(:meth:`~archangel.Process.wait`) and the stage inbox between pipeline stages
cost no extra call. The bus keeps its own too (it imports only
:mod:`archangel.errors`, never the kernel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["hold", "park", "wake_all"]

_F = TypeVar("_F", bound="asyncio.Future[Any]")


def hold(tasks: set[Any], task: _F) -> _F:
    """Keep ``task`` in ``tasks`` until it is done; return it.

    The owner's set is the strong reference the loop does not keep; the task
    leaves it by itself when done (or cancelled).
    """
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def wake_all(waiters: list[asyncio.Future[None]]) -> None:
    """Resolve every future parked in ``waiters`` (those not done yet) and empty the list.

    A waiter woken that parks again waits for the next wake.
    """
    for future in waiters:
        if not future.done():
            future.set_result(None)
    waiters.clear()


async def park(waiters: Iterable[list[asyncio.Future[None]]]) -> None:
    """Wait until one of the ``waiters`` lists is woken (:func:`wake_all`).

    One future, parked in each list. However the wait ends (woken, cancelled,
    timed out), the future is left in none of them: a wait that times out
    again and again (a tail looking every 0.1 s) on a list never woken must
    not pile futures up there.
    """
    lists = list(waiters)
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for parked in lists:
        parked.append(future)
    try:
        await future
    finally:
        if not future.done():
            future.cancel()
        for parked in lists:
            if future in parked:
                parked.remove(future)
