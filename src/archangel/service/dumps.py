"""State and runlog dumps: what a service looks like now, as JSON.

* The **runlog** (SIGUSR1, pyzenkit's name): the manager's counters and
  the live pipelines', their rates per second since start and since the
  previous runlog, and pyzenkit's statistics of every counter (count,
  increment, speed, percentage: :mod:`archangel.service.statistics`).
* The **state** (SIGUSR2): the settings, every live process, the
  pipelines, the history of completed processes, the bus state, the
  listening addresses, what the application adds and the stack of every
  asyncio task.

:func:`state` builds the state at once; :func:`state_text` builds the same
JSON text on the running loop in slices of about a millisecond, yielding to
the loop between them, so a dump of 50,000 processes (or tasks) does not
stall the service it describes (the App dumps that way). A :class:`Writer`
writes with aiofiles to a temporary file of its own in the same directory,
then renames it over the target: a reader never sees half a file, even while
several writes of it run at once. This module only builds
dicts and text and writes files; when to dump is the App's business.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import json
import os
import secrets
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiofiles

from ..kernel.frames import innermost
from ..kernel.holders import hold
from ..kernel.loop_tasks import tasks_of
from ..kernel.manager import ProcessManager
from ..kernel.process import Process
from ..kernel.slices import TimeSlice
from .statistics import Statistics, counters

__all__ = ["MAX_TASKS", "Runlog", "Writer", "state", "state_text", "task_stacks"]

_COUNTERS = ("started", "exited", "killed", "failed")
#: Seconds of work on the loop between two yields while a state is built in slices.
_SLICE = 0.001
#: Characters per piece handed to the file (one thread hop each).
_PIECE = 1 << 18


class Runlog:
    """Builds runlogs for one manager, remembering the previous one for rates.

    Each runlog holds ``counters`` (the manager's, with the user statistics),
    ``pipelines`` (each live pipeline's counters, per cog too), ``rates``
    (processes started, exited, killed and failed per second since start and
    since the previous runlog), ``statistics`` (pyzenkit's: for every number
    of ``counters`` and ``pipelines``, nested as they are, its count,
    increment, speed and percentage since the previous runlog; see
    :func:`~archangel.service.statistics.calc_statistics`) and ``interval``
    (the seconds since that previous runlog, which the speeds divide by;
    since the Runlog was made, for the first).

    Args:
        manager: The manager whose counters are reported.
        name: The service name written into each runlog.
    """

    def __init__(self, manager: ProcessManager, name: str) -> None:
        self.manager = manager
        self.name = name
        self.started = time.time()
        self._previous: tuple[float, Mapping[str, Any]] | None = None
        self._statistics = Statistics(lambda: counters(manager))

    def __call__(self) -> dict[str, Any]:
        """The runlog now: counters, rates and statistics since start and since the last call."""
        now = time.time()
        tree, statistics, interval = self._statistics()
        current = {k: v for k, v in tree.items() if k != "pipelines"}
        uptime = max(now - self.started, 1e-9)
        since_start = {k: current[k] / uptime for k in _COUNTERS}
        if self._previous is None:
            since_last = since_start
        else:
            then, before = self._previous
            span = max(now - then, 1e-9)
            since_last = {k: (current[k] - before[k]) / span for k in _COUNTERS}
        self._previous = (now, current)
        return {
            "name": self.name,
            "pid": os.getpid(),
            "time": now,
            "uptime": uptime,
            "counters": current,
            "pipelines": tree["pipelines"],
            "rates": {"since_start": since_start, "since_last": since_last},
            "interval": interval,
            "statistics": statistics,
        }


def _task_row(task: asyncio.Task[Any]) -> dict[str, Any]:
    frames = [
        f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
        for f in task.get_stack(limit=8)
    ]
    return {
        "name": task.get_name(),
        "done": task.done(),
        "where": innermost(task.get_coro()),
        "stack": frames,
    }


#: Tasks the state describes at most (the first by name); ``tasks_total`` counts them all.
MAX_TASKS = 1000


def _by_name(task: asyncio.Task[Any]) -> str:
    return task.get_name()


def task_stacks(limit: int = MAX_TASKS) -> list[dict[str, Any]]:
    """Every asyncio task of the running loop: name, state and innermost frame.

    Bounded to ``limit`` tasks (the first by name) so a dump stays readable.
    """
    first = heapq.nsmallest(limit, tasks_of(asyncio.get_running_loop()), key=_by_name)
    return [_task_row(task) for task in first]


async def _first_tasks(limit: int, time_slice: TimeSlice) -> tuple[list[asyncio.Task[Any]], int]:
    """The first ``limit`` tasks by name and how many there are, picked in slices.

    Taking the set is one copy of weak references
    (:func:`~archangel.kernel.loop_tasks.task_refs`, not the 50 ms an
    ``asyncio.all_tasks()`` of 100,000 tasks holds the loop); following them
    and choosing is done one task at a time, into a list kept sorted by name
    and bounded to ``limit`` (ties keep the order they came in, as
    :func:`heapq.nsmallest` does), with a :meth:`~TimeSlice.tick` after
    each. A task that ends before it is reached is not counted; one that
    ends after is still described (as done).
    """
    names: list[str] = []
    best: list[asyncio.Task[Any]] = []
    total = 0
    for task in tasks_of(asyncio.get_running_loop()):
        total += 1
        name = task.get_name()
        if len(best) < limit or (best and name < names[-1]):
            at = bisect.bisect_right(names, name)
            names.insert(at, name)
            best.insert(at, task)
            if len(best) > limit:
                del names[-1], best[-1]
        await time_slice.tick()
    return best, total


def _row(process: Process) -> dict[str, Any]:
    """One process of the state: its :class:`ProcessInfo`, and its own counts under ``user``."""
    row = process.info().as_dict()
    user = Process.statistics(process)  # the mixin's: a protocol may use the name itself
    if user:
        row["user"] = user
    return row


def state(
    manager: ProcessManager,
    *,
    name: str,
    bus_state: str | None = None,
    addresses: Sequence[Any] = (),
    max_processes: int = 100_000,
    settings: Mapping[str, Any] | None = None,
    app: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The state now: settings, processes (up to ``max_processes``), pipelines, history, tasks.

    ``settings`` (what the service runs with) and ``app`` (what the
    application adds: the App passes its ``state`` subscribers' results)
    are written as given. ``history`` is the manager's completed processes,
    oldest first (as many as its ``history`` bound keeps). A process that
    counted (:meth:`~archangel.Process.inc`) has its counts under ``user``.
    """
    processes = manager.processes()
    return _head(manager, name, bus_state, addresses, settings, app) | {
        "processes": [_row(p) for p in processes[:max_processes]],
        "processes_total": len(processes),
        "pipelines": [_row(p) for p in processes if p.kind == "pipeline"],
        "history": [record.as_dict() for record in manager.history],
        "tasks": task_stacks(),
        "tasks_total": sum(1 for _ in tasks_of(asyncio.get_running_loop())),
    }


def _head(
    manager: ProcessManager,
    name: str,
    bus_state: str | None,
    addresses: Sequence[Any],
    settings: Mapping[str, Any] | None,
    app: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The state's small members, in the order :func:`state` gives them."""
    return {
        "name": name,
        "pid": os.getpid(),
        "time": time.time(),
        "python": sys.version.split()[0],
        "settings": dict(settings or {}),
        "bus": {"state": bus_state},
        "addresses": [list(a) if isinstance(a, tuple) else a for a in addresses],
        "counters": manager.counters,
        "app": dict(app or {}),
    }


class _ListText:
    """A list being encoded as ``json.dumps(..., indent=1)`` writes it one level deep.

    Each item is encoded alone as it comes, and its text indented two levels:
    the same text as one ``json.dumps`` of the whole, without holding the
    loop for all of it, and without keeping the items themselves (each dict
    is dropped once encoded, so it never ages into the collector's oldest
    generation, whose full collections cost tens of milliseconds in a big
    service).
    """

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self._parts: list[str] = []
        self._size = 0
        self._count = 0

    def add(self, item: Any) -> None:
        part = json.dumps(item, indent=1, default=str).replace("\n", "\n  ")
        self._parts.append(("[\n  " if not self._count else ",\n  ") + part)
        self._count += 1
        self._size += len(part)
        if self._size >= _PIECE:
            self.pieces.append("".join(self._parts))
            self._parts.clear()
            self._size = 0

    def close(self) -> list[str]:
        """The pieces of the text, ending the list."""
        if not self._count:
            return ["[]"]
        self._parts.append("\n ]")
        self.pieces.append("".join(self._parts))
        return self.pieces


async def state_text(
    manager: ProcessManager,
    *,
    name: str,
    bus_state: str | None = None,
    addresses: Sequence[Any] = (),
    max_processes: int = 100_000,
    settings: Mapping[str, Any] | None = None,
    app: Mapping[str, Any] | None = None,
) -> list[str]:
    """The state now as JSON text, built on the running loop in slices.

    The text is that of ``json.dumps(state(...), indent=1, default=str)``
    (the same keys, in the same order), in pieces to write one after the
    other. The processes are those running when it is called; each is
    described when its turn comes, so one that exits meanwhile shows as
    exited. No step holds the loop for more than about ``_SLICE``
    seconds, except copying the set of tasks (about 2 ms at 100,000 tasks).
    ``tasks`` describes the first :data:`MAX_TASKS` by name, ``tasks_total``
    counts them all.
    """
    time_slice = TimeSlice(_SLICE)
    processes = manager.processes()
    history = manager.history  # iterating it takes a snapshot
    head = _head(manager, name, bus_state, addresses, settings, app) | {
        "processes": None,
        "processes_total": len(processes),
        "pipelines": None,
        "history": None,
        "tasks": None,
        "tasks_total": 0,
    }
    lists = {key: _ListText() for key in ("processes", "pipelines", "history", "tasks")}
    for process in processes[:max_processes]:
        lists["processes"].add(_row(process))
        await time_slice.tick()
    for process in processes:
        if process.kind == "pipeline":
            lists["pipelines"].add(_row(process))
        await time_slice.tick()
    del processes
    for record in history:
        lists["history"].add(record.as_dict())
        await time_slice.tick()
    tasks, head["tasks_total"] = await _first_tasks(MAX_TASKS, time_slice)
    for task in tasks:
        lists["tasks"].add(_task_row(task))
        await time_slice.tick()
    del tasks
    # The small members in one call, each long list as a marker replaced by its text.
    for key in lists:
        head[key] = f"\0{key}\0"
    text = json.dumps(head, indent=1, default=str)
    pieces: list[str] = []
    for key, items in lists.items():
        before, _, text = text.partition(json.dumps(f"\0{key}\0"))
        pieces.append(before)
        pieces += items.close()
    pieces.append(text)
    return pieces


class Writer:
    """Writes dumps to files atomically, and owns the writes under way.

    Each write goes with aiofiles to a temporary file of its own beside the
    target (``.<name>.<random>.tmp``, created exclusively, so writes that run
    at the same time never share one), is flushed, fsynced and renamed over
    the target: a reader sees the old file or the new one, never part of one.
    On failure the temporary file is removed and the ``OSError`` raised.
    Cancelling the caller does not cut a write short: one that has begun is
    finished (or cleaned up), so no file is left open or half written; the
    writer holds it until then (:attr:`pending`).
    """

    __slots__ = ("_writes",)

    def __init__(self) -> None:
        self._writes: set[asyncio.Future[None]] = set()

    @property
    def pending(self) -> int:
        """Writes begun and not finished yet (their callers may have stopped waiting)."""
        return len(self._writes)

    async def write_json(self, path: str | os.PathLike[str], data: Any) -> str:
        """Write ``data`` as JSON to ``path``; returns the path written."""
        return await self.write_text(path, [json.dumps(data, indent=1, default=str)])

    async def write_text(self, path: str | os.PathLike[str], pieces: Iterable[str]) -> str:
        """Write the text ``pieces`` to ``path``, one after the other; returns the path.

        For text already encoded, say by :func:`state_text`. Each piece is
        handed to the file's thread on its own, so no single step holds the
        loop (or the GIL) for long.
        """
        target = os.fspath(path)
        write = asyncio.ensure_future(_write_atomically(target, list(pieces)))
        await asyncio.shield(hold(self._writes, write))
        return target


async def _write_atomically(target: str, pieces: list[str]) -> None:
    directory, name = os.path.split(target)
    temp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    try:
        async with aiofiles.open(temp, "x", encoding="utf-8") as out:  # this write's own file
            for piece in pieces:
                await out.write(piece)
            await out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        # In a thread too: replacing a big file frees its blocks, milliseconds on ext4.
        await asyncio.to_thread(os.replace, temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
