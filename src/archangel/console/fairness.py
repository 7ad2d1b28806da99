"""How the console keeps from starving the app's loop (and its sessions each other).

The console runs on its own thread, but that thread shares the GIL with the
app's loop, and its actions run on the app's loop itself. Every piece of
the console that could hold either of them for long follows one of these
rules, and each rule is written here, once:

1. **Short GIL turns while a session is open** (:func:`short_gil_slices`).
   The interpreter's switch interval is lowered to 1 ms for as long as any
   console session (or dashboard request) is open, so the app's loop never
   waits more than about a millisecond for the GIL while the console works
   in Python.
2. **No long call into C** (:func:`sorted_head`, :func:`json_parts`). The
   switch interval cannot interrupt C code: one ``list.sort`` of 100,000
   names or one ``json.dumps`` of 10,000 records would hold the GIL for
   10-15 ms whatever the interval. Sorts are done in chunks of
   ``_SORT_CHUNK`` and merged; JSON is encoded one record at a time.
3. **Rest together under load** (:class:`Pacer`). The GIL hands over badly
   between a thread that works in short bursts between brief releases and
   one that waits for it; the sessions of a console share one pacer that
   makes the console's loop sleep (GIL released) after each millisecond of
   queued work.
4. **Bounded steps per session** (``_EDIT_STEP``, ``_EDIT_STEP_ECHO``).
   The line editor takes input a bounded piece at a time, so a flood of keys
   in one session yields to the others (and to the pacer) between pieces.
5. **Slices on the app's loop** (:class:`~archangel.kernel.slices.TimeSlice`,
   the kernel's, shared with the state dump). Actions that walk many
   processes on the app's loop (``killall``, ``kill`` of many) yield to it
   after each millisecond of work.

What this is not: the hand-off to the app's loop and the lag probe are
:mod:`archangel.console.apploop`'s; the snapshot of asyncio's tasks in one
atomic C call is :mod:`archangel.console.tasks`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..kernel.slices import TimeSlice
from .render import to_json

__all__ = ["Pacer", "TimeSlice", "json_parts", "short_gil_slices", "sorted_head"]

T = TypeVar("T")

# -- 1. short GIL turns ---------------------------------------------------------------------

#: While a session is open, the console thread gives the GIL up at least this often.
_GIL_SLICE = 0.001

# The switch interval is one setting for the whole interpreter, so the count
# of sessions open (in any console of the process) is process-wide too.
_slices_lock = threading.Lock()
_slices_depth = 0
_slices_saved = 0.0


@contextlib.contextmanager
def short_gil_slices() -> Iterator[None]:
    """Lower the interpreter's GIL switch interval to ``_GIL_SLICE`` while in the block.

    A console session runs Python code on the console's thread (sorting
    100,000 processes, say); with the default 5 ms switch interval the app's
    loop could wait that long for the GIL. A 1 ms interval keeps each wait
    under about a millisecond. It is held for a whole session, not one
    command: a thread already waiting for the GIL waits out the interval it
    began with, so lowering it only once the work has begun would be too
    late. The previous value is restored when the last session in the
    process ends. (The setting only matters while threads compete for the
    GIL: an idle session costs nothing.)
    """
    global _slices_depth, _slices_saved
    with _slices_lock:
        if _slices_depth == 0:
            _slices_saved = sys.getswitchinterval()
            if _slices_saved > _GIL_SLICE:
                sys.setswitchinterval(_GIL_SLICE)
        _slices_depth += 1
    try:
        yield
    finally:
        with _slices_lock:
            _slices_depth -= 1
            if _slices_depth == 0 and _slices_saved > _GIL_SLICE:
                sys.setswitchinterval(_slices_saved)


def _forget_slices_after_fork() -> None:
    """In a forked child (a worker): no session of the parent's is open here.

    The child starts with the parent's switch interval, count and lock as
    they were at the fork, perhaps mid-session or with the lock held by a
    thread the child does not have: give it the interval the parent had
    before its sessions, a count of none and a fresh lock.
    """
    global _slices_lock, _slices_depth
    _slices_lock = threading.Lock()
    if _slices_depth and _slices_saved > _GIL_SLICE:
        sys.setswitchinterval(_slices_saved)
    _slices_depth = 0


os.register_at_fork(after_in_child=_forget_slices_after_fork)

# -- 2. no long call into C -----------------------------------------------------------------

#: Items sorted by one ``list.sort`` call (well under a millisecond each).
_SORT_CHUNK = 2048


def sorted_head(items: list[T], key: Callable[[T], Any], reverse: bool, count: int) -> list[T]:
    """The first ``count`` of ``sorted(items, key=key, reverse=reverse)``, in small steps.

    Chunks of ``_SORT_CHUNK`` are sorted, then merged lazily (stably, like
    one sort) until ``count`` are out: each call into C is short, and a page
    near the top of 100,000 processes costs little more than the chunk sorts.
    """
    if len(items) <= _SORT_CHUNK:
        return sorted(items, key=key, reverse=reverse)[:count]
    runs = [
        sorted(items[start : start + _SORT_CHUNK], key=key, reverse=reverse)
        for start in range(0, len(items), _SORT_CHUNK)
    ]
    merged = heapq.merge(*runs, key=key, reverse=reverse)
    return list(itertools.islice(merged, count))


def json_parts(records: Iterable[Any], budget: int) -> list[str]:
    """``records`` encoded one by one, as many as fit in ``budget`` bytes with their commas.

    One ``json.dumps`` of 10,000 records holds the GIL for about 15 ms (C code
    is not interrupted by the switch interval); one record at a time, each
    call is a few microseconds. Stops at the first record that does not fit.
    """
    parts: list[str] = []
    size = 0
    for record in records:
        part = to_json(record)
        size += len(part) + 1  # ASCII (json escapes the rest): characters are bytes
        if size > budget:
            break
        parts.append(part)
    return parts


# -- 3. rest together under load ------------------------------------------------------------


class Pacer:
    """Rests the console's thread now and then while its sessions have work queued.

    The GIL hands over badly between a thread that works in short bursts
    between brief releases (a loop going round, each turn a short ``epoll``)
    and a thread that waits for it: the waiter is woken at each release, the
    releasing thread takes the GIL straight back, and the waiter's switch
    interval starts again, so it may wait for hundreds of milliseconds. A
    session chewing through a flood of keys does exactly that. So the
    sessions of a console share one pacer: once they have worked ``work``
    seconds in a row, each of them sleeps until ``rest`` seconds have passed,
    and the console's loop waits in ``epoll`` with the GIL released, long
    enough for the app's loop to take it. A session with nothing queued never
    calls it.
    """

    def __init__(self, work: float = 0.001, rest: float = 0.001) -> None:
        self.work = work
        self.rest = rest
        self._since = 0.0  # when the current stretch of work began
        self._last = 0.0  # the last call
        self._resume = 0.0  # the end of the rest under way

    async def pace(self) -> None:
        """Yield to the loop, resting first if the console has worked long enough."""
        now = time.perf_counter()
        if now - self._last > self.rest:  # the console was idle since: a new stretch
            self._since = now
        self._last = now
        if now < self._resume:
            await asyncio.sleep(self._resume - now)
        elif now - self._since >= self.work:
            self._resume = now + self.rest
            await asyncio.sleep(self.rest)
        else:
            await asyncio.sleep(0)
            return
        self._since = self._last = time.perf_counter()


# -- 4. bounded steps per session -----------------------------------------------------------

#: Characters :meth:`~archangel.console.lineedit.LineEditor.step` takes at most.
_EDIT_STEP = 1024
#: Echo after which :meth:`~archangel.console.lineedit.LineEditor.step` stops early
#: (one redraw may follow).
_EDIT_STEP_ECHO = 16 * 1024
