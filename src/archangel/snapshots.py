"""State and runlog dumps: what a service looks like now, as JSON.

* The **runlog** (SIGUSR1, pyzenkit's name): the manager's counters and
  their rates, per second since start and since the previous runlog.
* The **state** (SIGUSR2): every live process, the pipelines, the bus state,
  the listening addresses and the stack of every asyncio task.

:func:`write_json` writes with aiofiles to a temporary file of its own in the
same directory, then renames it over the target: a reader never sees half a
file, even while several writes of it run at once. This module only builds
dicts and writes files; when to dump is the App's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiofiles

from .manager import ProcessManager
from .task import _innermost

__all__ = ["Runlog", "state", "task_stacks", "write_json"]

_COUNTERS = ("started", "exited", "killed", "failed")


class Runlog:
    """Builds runlogs for one manager, remembering the previous one for rates.

    Args:
        manager: The manager whose counters are reported.
        name: The service name written into each runlog.
    """

    def __init__(self, manager: ProcessManager, name: str) -> None:
        self.manager = manager
        self.name = name
        self.started = time.time()
        self._previous: tuple[float, Mapping[str, Any]] | None = None

    def __call__(self) -> dict[str, Any]:
        """The runlog now: counters, rates since start and since the last call."""
        now = time.time()
        counters = self.manager.counters
        uptime = max(now - self.started, 1e-9)
        since_start = {k: counters[k] / uptime for k in _COUNTERS}
        if self._previous is None:
            since_last = since_start
        else:
            then, before = self._previous
            span = max(now - then, 1e-9)
            since_last = {k: (counters[k] - before[k]) / span for k in _COUNTERS}
        self._previous = (now, counters)
        return {
            "name": self.name,
            "pid": os.getpid(),
            "time": now,
            "uptime": uptime,
            "counters": counters,
            "rates": {"since_start": since_start, "since_last": since_last},
        }


def task_stacks(limit: int = 1000) -> list[dict[str, Any]]:
    """Every asyncio task of the running loop: name, state and innermost frame.

    Bounded to ``limit`` tasks (sorted by name) so a dump stays readable.
    """
    rows = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name())[:limit]:
        frames = [
            f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
            for f in task.get_stack(limit=8)
        ]
        rows.append(
            {
                "name": task.get_name(),
                "done": task.done(),
                "where": _innermost(task.get_coro()),
                "stack": frames,
            }
        )
    return rows


def state(
    manager: ProcessManager,
    *,
    name: str,
    bus_state: str | None = None,
    addresses: Sequence[Any] = (),
    max_processes: int = 100_000,
) -> dict[str, Any]:
    """The state now: processes (up to ``max_processes``), pipelines, bus, tasks."""
    processes = manager.processes()
    return {
        "name": name,
        "pid": os.getpid(),
        "time": time.time(),
        "python": sys.version.split()[0],
        "bus": {"state": bus_state},
        "addresses": [list(a) if isinstance(a, tuple) else a for a in addresses],
        "counters": manager.counters,
        "processes": [p.info().as_dict() for p in processes[:max_processes]],
        "processes_total": len(processes),
        "pipelines": [p.info().as_dict() for p in processes if p.kind == "pipeline"],
        "tasks": task_stacks(),
    }


async def write_json(path: str | os.PathLike[str], data: Any) -> str:
    """Write ``data`` as JSON to ``path`` atomically; returns the path written.

    The JSON is written with aiofiles to a temporary file of its own beside
    the target (``.<name>.<random>.tmp``, created exclusively, so writes that
    run at the same time never share one), flushed, fsynced and renamed over
    ``path``: a reader sees the old file or the new one, never part of one.
    On failure the temporary file is removed and the ``OSError`` raised.
    Cancelling the caller does not cut a write short: one that has begun is
    finished (or cleaned up), so no file is left open or half written.
    """
    target = os.fspath(path)
    text = json.dumps(data, indent=1, default=str)
    write = asyncio.ensure_future(_write_atomically(target, text))
    _writes.add(write)
    write.add_done_callback(_writes.discard)
    await asyncio.shield(write)
    return target


# Writes whose caller was cancelled: a strong reference until they finish.
_writes: set[asyncio.Future[None]] = set()


async def _write_atomically(target: str, text: str) -> None:
    directory, name = os.path.split(target)
    temp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    try:
        async with aiofiles.open(temp, "x", encoding="utf-8") as out:  # this write's own file
            await out.write(text)
            await out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
