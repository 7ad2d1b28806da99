"""Console commands about every asyncio task on the app's loop: ``tasks``, ``where``, ``cancel``.

Processes are the console's main view; ``tasks`` shows the rest too: every
task not done on the app's loop, managed or not, with a short id (``t12``)
that ``where`` and ``cancel`` take, as well as a PID or a task's name.

Reading from the console's thread: the set of asyncio's tasks is copied in
one C call (``list`` of its weak references, atomic under the GIL), then
followed and filtered in Python here, so the GIL changes hands between the
steps and the app's loop never waits for more than one step, however many
tasks there are. Rows (the coroutine, where it waits) are built for the page
shown only. Cancelling is handed to the app's loop, as ``kill`` is.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import time
import weakref
from typing import Any

from ..kernel.frames import await_chain, innermost
from ..kernel.loop_tasks import tasks_of
from ..kernel.process import Process
from .apploop import Status
from .commands import (
    Command,
    CommandError,
    Context,
    Terminal,
    clip_word,
    parse_options,
    parse_pid,
    plural,
    unknown_pid,
)
from .fairness import json_parts, sorted_head
from .listing import _MAX_PAGE, _PAGE
from .render import clip, fit, format_stack, json_with_list, table, to_json

__all__ = ["TaskIds", "awaited", "task_commands"]

#: How long ``cancel`` waits for a cancelled task to finish.
_CANCEL_WAIT = 5.0
_CANCEL_POLL = 0.005
_TASK_HEADERS = ("ID", "PID", "STATE", "NAME", "COROUTINE", "WAITING AT")
_TASKS_OPTIONS: dict[str, type] = {"--name": str, "--limit": int, "--offset": int, "--json": bool}
_TASKS_ALIASES = {"-n": "--name", "-l": "--limit", "-o": "--offset"}


class TaskIds:
    """Short ids for tasks (``t1``, ``t2``...), given in the order the console first sees them.

    One per console, used on its thread only. Tasks are held weakly (by
    ``id()`` and a weak reference that tells a reused ``id()`` apart): a
    task that is gone is forgotten, and its id is never given again.
    """

    def __init__(self) -> None:
        # Plain dicts of ints and weak references, no tuples: a listing of
        # 100,000 tasks must not leave 100,000 new containers for the garbage
        # collector, whose full collection holds the GIL for 100 ms and more.
        self._refs: dict[int, weakref.ref[asyncio.Task[Any]]] = {}
        self._numbers: dict[int, int] = {}
        self._by_number: dict[int, weakref.ref[asyncio.Task[Any]]] = {}
        self._next = 1

    def number(self, task: asyncio.Task[Any]) -> int:
        """The task's number (given now if it has none yet)."""
        key = id(task)
        ref = self._refs.get(key)
        if ref is not None and ref() is task:
            return self._numbers[key]
        number = self._next
        self._next += 1
        ref = weakref.ref(task)
        self._refs[key] = self._by_number[number] = ref
        self._numbers[key] = number
        return number

    def get(self, number: int) -> asyncio.Task[Any] | None:
        """The task numbered ``number``, if it is still around."""
        ref = self._by_number.get(number)
        return None if ref is None else ref()

    def prune(self, live: int) -> None:
        """Forget the tasks that are gone, once they outnumber the ``live`` ones."""
        if len(self._refs) <= 2 * live + 1024:
            return
        gone = [key for key, ref in self._refs.items() if ref() is None]
        for key in gone:
            del self._refs[key], self._numbers[key]
        for number in [n for n, ref in self._by_number.items() if ref() is None]:
            del self._by_number[number]


def awaited(awaiting: Any) -> str:
    """What a task waits for, in words (not its repr, which shows internals)."""
    if isinstance(awaiting, asyncio.Task):
        return f"task {clip(awaiting.get_name(), 80)}"
    name = type(awaiting).__name__
    if name == "FutureIter" or isinstance(awaiting, asyncio.Future):
        return "a future"
    return f"a {name}"


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None)
    return name if isinstance(name, str) else type(coro).__name__


def _short_path(where: str | None) -> str:
    if where is None:
        return "-"
    path, _, line = where.rpartition(":")
    return f"{os.path.basename(path)}:{line}"


class _Tasks:
    def __init__(self, context: Context, timeout: float) -> None:
        self.context = context
        self.timeout = timeout
        self.ids = TaskIds()

    # -- the snapshot (console's thread) -------------------------------------------------

    def _snapshot(self) -> tuple[list[int], list[asyncio.Task[Any]], dict[int, Process]]:
        """The app loop's tasks, their numbers (in step), and the process each runs (by id())."""
        number = self.ids.number
        tasks = list(tasks_of(self.context.apploop.loop))
        numbers = [number(task) for task in tasks]
        self.ids.prune(len(tasks))
        owners: dict[int, Process] = {}
        for process in self.context.manager.processes():
            runs = getattr(process, "task", None)
            if runs is not None:
                owners[id(runs)] = process
        return numbers, tasks, owners

    def _state(self, task: asyncio.Task[Any]) -> str:
        current = asyncio.current_task(self.context.apploop.loop)
        if task is current:
            return "running"
        return "cancelling" if task.cancelling() else "pending"

    def _record(self, task: asyncio.Task[Any], owner: Process | None) -> dict[str, Any]:
        return {
            "id": f"t{self.ids.number(task)}",
            "pid": owner.pid if owner is not None else None,
            "kind": owner.kind if owner is not None else None,
            "state": self._state(task),
            "name": task.get_name(),
            "coroutine": _coroutine_name(task),
            "where": innermost(task.get_coro()),
        }

    # -- tasks ----------------------------------------------------------------------------

    async def tasks(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, _TASKS_OPTIONS, _TASKS_ALIASES)
        if positional:
            raise CommandError(f"tasks takes no arguments, got {clip_word(' '.join(positional))}")
        limit = opts.get("--limit", _PAGE)
        offset = opts.get("--offset", 0)
        if not 1 <= limit <= _MAX_PAGE:
            raise CommandError(f"--limit must be between 1 and {_MAX_PAGE}, not {limit}")
        if offset < 0:
            raise CommandError(f"--offset must be 0 or more, not {offset}")
        numbers, tasks, owners = self._snapshot()
        # Indexes into the two lists (ints: nothing for the garbage collector).
        chosen = list(range(len(tasks)))
        if "--name" in opts:
            pattern = opts["--name"]
            if any(c in pattern for c in "*?["):
                chosen = [i for i in chosen if fnmatch.fnmatchcase(tasks[i].get_name(), pattern)]
            else:
                chosen = [i for i in chosen if pattern in tasks[i].get_name()]
        total = len(chosen)
        managed = sum(1 for i in chosen if id(tasks[i]) in owners)
        page = sorted_head(chosen, numbers.__getitem__, False, offset + limit)[offset:]
        records = [self._record(tasks[i], owners.get(id(tasks[i]))) for i in page]
        if opts.get("--json"):
            head: dict[str, Any] = {"total": total, "offset": offset, "limit": limit}
            budget = self.context.max_output - len(to_json(head)) - 128
            parts = json_parts(records, budget)
            end = offset + len(parts)
            head["count"] = len(parts)
            head["truncated"] = len(parts) < len(records)
            head["next_offset"] = end if end < total else None
            return json_with_list(head, "tasks", parts)
        if not records:
            return "no tasks match" if total or "--name" in opts else "no tasks on the app loop"
        rows = [
            [
                r["id"],
                str(r["pid"]) if r["pid"] is not None else "-",
                r["state"],
                clip(r["name"], 24),
                clip(r["coroutine"], 32),
                _short_path(r["where"]),
            ]
            for r in records
        ]
        text = table(_TASK_HEADERS, fit(_TASK_HEADERS, rows, terminal.width))
        shown = (
            f"showing {offset + 1}-{offset + len(records)} of {plural(total, 'task')} "
            f"({managed} of them processes)"
        )
        if offset + len(records) < total:
            kept = [a for a in args if not a.startswith(("--offset", "-o"))]
            terminal.more = ["tasks", *kept, "--offset", str(offset + len(records))]
            shown += " (Enter for more)"
        return f"{text}\n{shown}"

    # -- finding one task -------------------------------------------------------------------

    def find(self, text: str) -> tuple[asyncio.Task[Any], Process | None]:
        """The task an operator names: ``t12`` (an id from ``tasks``), a PID, or a task name.

        Raises:
            CommandError: No such task, or a name several tasks share.
        """
        manager = self.context.manager
        if text[:1].isdigit():
            pid = parse_pid(text)
            process = manager.get(pid)
            if process is None:
                raise CommandError(unknown_pid(manager, pid))
            task = getattr(process, "task", None)
            if not isinstance(task, asyncio.Task):
                raise CommandError(
                    f"pid {pid} ({process.kind}) is not a task: it runs in callbacks "
                    "(a protocol), so it has no stack of its own; see 'info'"
                )
            return task, process
        if text[:1] in "tT" and text[1:].isdigit():
            found = self.ids.get(int(text[1:]))
            if found is None or found.done():
                raise CommandError(f"no task {clip_word(text)} (it has finished, or never was)")
            tasks, owners = [found], {}
            for process in manager.processes():
                if getattr(process, "task", None) is found:
                    owners[id(found)] = process
        else:
            numbers, every, owners = self._snapshot()
            named = [i for i, task in enumerate(every) if task.get_name() == text]
            tasks = [every[i] for i in sorted(named, key=numbers.__getitem__)]
            if not tasks:
                raise CommandError(f"no task named {clip_word(text)}: see 'tasks'")
            if len(tasks) > 1:
                ids = ", ".join(f"t{self.ids.number(t)}" for t in tasks[:10])
                raise CommandError(
                    f"{len(tasks)} tasks are named {clip_word(text)} ({ids}): give its id"
                )
        return tasks[0], owners.get(id(tasks[0]))

    def describe(self, task: asyncio.Task[Any], process: Process | None) -> str:
        """``task t3 (worker-1)``, with its PID when it is a process."""
        text = f"task t{self.ids.number(task)} ({clip(task.get_name(), 80)})"
        if process is None:
            return text
        return f"pid {process.pid} ({clip(process.name, 80)}), {text}"

    # -- where ------------------------------------------------------------------------------

    async def where(self, args: list[str], terminal: Terminal) -> str:
        if len(args) != 1:
            raise CommandError("usage: where TASK (an id such as t3, a pid, or a task name)")
        task, process = self.find(args[0])
        if task.done():
            return f"{self.describe(task, process)} has finished"
        frames, awaiting = await_chain(task.get_coro())
        text = f"{self.describe(task, process)}, innermost await last:"
        if frames:
            text += "\n" + format_stack(frames)
        if awaiting is not None:
            text += f"\n  awaiting {awaited(awaiting)}"
        return text

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, args: list[str], terminal: Terminal) -> str:
        if len(args) != 1:
            raise CommandError("usage: cancel TASK (an id such as t3, a pid, or a task name)")
        task, process = self.find(args[0])
        what = self.describe(task, process)

        async def cancel_and_wait() -> str:
            # On the app's loop: cancel, then wait a bounded time for it to end.
            if task.done():
                return "had already finished"
            task.cancel()
            deadline = time.monotonic() + _CANCEL_WAIT
            while not task.done() and time.monotonic() < deadline:
                await asyncio.sleep(_CANCEL_POLL)
            if task.cancelled():
                return "cancelled"
            if task.done():
                return "finished (it caught the cancellation and returned)"
            return f"cancel sent; still running after {_CANCEL_WAIT:g} s"

        outcome = await self.context.apploop.run(
            cancel_and_wait, start_timeout=self.timeout, finish_timeout=_CANCEL_WAIT + 1.0
        )
        if outcome.status is Status.DONE:
            return f"{what}: {outcome.value}"
        if outcome.status is Status.QUEUED:
            return (
                f"the app loop is blocked (no answer in {self.timeout:g} s): cancel of {what} "
                "is queued and runs when the loop is free; see 'stack'"
            )
        if outcome.status is Status.CLOSED:
            return f"cancel {what}: the app loop is closed"
        return f"cancel {what}: no answer from the app loop after {_CANCEL_WAIT + 1.0:g} s"


def task_commands(context: Context, timeout: float = 1.0) -> list[Command]:
    """The task commands (``tasks``, ``where``, ``cancel``), bound to ``context``.

    Args:
        context: What the commands work on.
        timeout: Seconds ``cancel`` waits for the app loop to pick it up.
    """
    tasks = _Tasks(context, timeout)
    return [
        Command(
            "tasks",
            tasks.tasks,
            "tasks [-n NAME] [-l N] [-o N] [--json]",
            "every asyncio task on the app loop, managed or not (paged)",
            "ID is what 'where' and 'cancel' take (t1, t2... in the order the console\n"
            "first saw each task); PID is the process a task runs, '-' for a plain task.\n"
            "STATE is running (the task the loop runs now), pending or cancelling;\n"
            "WAITING AT is the innermost line outside asyncio where it awaits.\n"
            "--name filters by a substring, or a glob with * ? [. --json prints one line:\n"
            '{"total": N, "offset": O, "limit": L, "count": C, "truncated": false,\n'
            '"next_offset": O+C or null, "tasks": [{"id": "t1", "pid": null, ...}]}.',
        ),
        Command(
            "where",
            tasks.where,
            "where TASK",
            "the await stack of a task (an id from 'tasks', a pid, or a task name)",
        ),
        Command(
            "cancel",
            tasks.cancel,
            "cancel TASK",
            "cancel a task and wait for it to end (an id, a pid, or a task name)",
            "Cancels on the app loop and waits up to 5 s for the task to finish; the\n"
            "reply says whether it was cancelled, caught it and returned, or still runs.\n"
            "For a process, 'kill PID' also runs its at-exit hooks and reports its exit.",
            changes=True,
        ),
    ]
