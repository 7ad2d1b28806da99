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
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgument
from ..kernel.frames import await_chain, innermost
from ..kernel.loop_tasks import live_refs
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
#: TaskIds keeps its entries in small dicts, one per block of 4,096 numbers
#: and one per megabyte of addresses (``id()``): a few thousand entries each.
_NUMBER_BLOCK = 12
_ID_BLOCK = 20
_NONE: dict[int, Any] = {}  # an empty block, to read from (never written)
_Ref = weakref.ref[asyncio.Task[Any]]


class TaskIds:
    """Short ids for tasks (``t1``, ``t2``...), given in the order the console first sees them.

    One per console, used on its thread only. Tasks are held weakly (by
    ``id()`` and a weak reference that tells a reused ``id()`` apart): a
    task that is gone is forgotten, and its id is never given again.
    """

    def __init__(self) -> None:
        # Dicts of ints and of weak references (asyncio's own where the
        # snapshot has them): numbering 200,000 tasks makes no new object the
        # garbage collector walks, and so triggers none of its collections,
        # each of which would hold the GIL for milliseconds while the
        # snapshot's big lists are young. And many small dicts, not one big
        # one: growing a dict of 175,000 entries is one C call of 10-20 ms
        # (a new table of 8 MB), when the GIL cannot change hands. Each small
        # dict holds a block of neighbours (numbers given one after another;
        # tasks at nearby addresses), so a pass over the tasks in asyncio's
        # order reads them in order, as it would one big dict.
        self._numbers: dict[int, dict[int, int]] = {}  # id(task) >> 20 -> {id(task): number}
        self._refs: dict[int, dict[int, _Ref]] = {}  # number >> 12 -> {number: the task}
        self._count = 0  # entries in _refs
        self._next = 1

    def number(self, task: asyncio.Task[Any]) -> int:
        """The task's number (given now if it has none yet)."""
        known = self.known(task)
        return known if known is not None else self._give(task, weakref.ref(task))

    def number_ref(self, ref: _Ref) -> int:
        """The number of the live task ``ref`` refers to (given now, keeping ``ref``, if none)."""
        task = ref()
        if task is None:
            raise InvalidArgument("TaskIds.number_ref() takes a reference to a live task")
        known = self.known(task)
        return known if known is not None else self._give(task, ref)

    def numbers(self, refs: Iterable[_Ref]) -> list[int]:
        """The numbers of the live tasks ``refs`` refer to, in their order.

        As :meth:`number_ref` for each (a task without a number gets one,
        and its reference is kept), in one call: the console's pass over
        every task of the loop.
        """
        numbers, by_number, give = self._numbers, self._refs, self._give
        found: list[int] = []
        append = found.append
        for ref in refs:
            task = ref()
            if task is None:
                continue
            key = id(task)  # known(), inlined: this runs for every task of the loop
            number = numbers.get(key >> _ID_BLOCK, _NONE).get(key)
            if number is None or by_number[number >> _NUMBER_BLOCK][number]() is not task:
                number = give(task, ref)
            append(number)
        return found

    def known(self, task: asyncio.Task[Any]) -> int | None:
        """The task's number, or None if it has none (none is given)."""
        key = id(task)
        number: int | None = self._numbers.get(key >> _ID_BLOCK, _NONE).get(key)
        if number is not None and self._refs[number >> _NUMBER_BLOCK][number]() is task:
            return number
        return None

    def _give(self, task: asyncio.Task[Any], ref: _Ref) -> int:
        number = self._next
        self._next += 1
        key = id(task)
        numbers = self._numbers.get(key >> _ID_BLOCK)
        if numbers is None:
            numbers = self._numbers[key >> _ID_BLOCK] = {}
        numbers[key] = number
        refs = self._refs.get(number >> _NUMBER_BLOCK)
        if refs is None:
            refs = self._refs[number >> _NUMBER_BLOCK] = {}
        refs[number] = ref
        self._count += 1
        return number

    def get(self, number: int) -> asyncio.Task[Any] | None:
        """The task numbered ``number``, if it is still around."""
        ref = self._refs.get(number >> _NUMBER_BLOCK, _NONE).get(number)
        return None if ref is None else ref()

    def prune(self, live: int) -> None:
        """Forget the tasks that are gone, once they outnumber the ``live`` ones."""
        if self._count <= 2 * live + 1024:
            return
        for block, refs in list(self._refs.items()):
            dead = [number for number, ref in refs.items() if ref() is None]
            for number in dead:
                del refs[number]
            self._count -= len(dead)
            if not refs:
                del self._refs[block]
        for block, numbers in list(self._numbers.items()):
            stale = [key for key, number in numbers.items() if self.get(number) is None]
            for key in stale:
                del numbers[key]
            if not numbers:
                del self._numbers[block]


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


def _named(task: asyncio.Task[Any] | None, pattern: str, glob: bool | None) -> bool:
    """Whether ``task``'s name matches: a glob, a substring, or (``glob`` None) exactly."""
    if task is None:
        return False
    name = task.get_name()
    if glob is None:
        return name == pattern
    return fnmatch.fnmatchcase(name, pattern) if glob else pattern in name


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

    def _snapshot(self) -> tuple[list[int], dict[asyncio.Task[Any], int]]:
        """The numbers of the app loop's tasks, and the PID of each task that is a process.

        The numbers are ints in a list, which the garbage collector does not
        walk: the tasks themselves are taken back with :meth:`TaskIds.get`
        for the few a command looks at. The owners are the manager's own map
        of its task processes (:meth:`~archangel.ProcessManager.task_pids`),
        copied in one step: no walk over every process.
        """
        ids = self.ids
        numbers = ids.numbers(live_refs(self.context.apploop.loop))
        ids.prune(len(numbers))
        return numbers, self.context.manager.task_pids()

    def _owner(
        self, task: asyncio.Task[Any], owners: dict[asyncio.Task[Any], int]
    ) -> Process | None:
        pid = owners.get(task)
        return None if pid is None else self.context.manager.get(pid)

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
        chosen, owners = self._snapshot()
        if "--name" in opts:
            pattern = opts["--name"]
            glob = any(c in pattern for c in "*?[")
            chosen = [n for n in chosen if _named(self.ids.get(n), pattern, glob)]
        total = len(chosen)
        managed = sum(1 for n in chosen if self.ids.get(n) in owners) if owners else 0
        page = sorted_head(chosen, int, False, offset + limit)[offset:]  # by number
        records = [
            self._record(task, self._owner(task, owners))
            for n in page
            if (task := self.ids.get(n)) is not None
        ]
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
            task = self.ids.get(int(text[1:]))
            if task is None or task.done():
                raise CommandError(f"no task {clip_word(text)} (it has finished, or never was)")
            return task, self._owner(task, manager.task_pids())
        numbers, owners = self._snapshot()
        named = sorted(n for n in numbers if _named(self.ids.get(n), text, None))
        found = [(n, task) for n in named if (task := self.ids.get(n)) is not None]
        if not found:
            raise CommandError(f"no task named {clip_word(text)}: see 'tasks'")
        if len(found) > 1:
            ids = ", ".join(f"t{n}" for n, _ in found[:10])
            raise CommandError(
                f"{len(found)} tasks are named {clip_word(text)} ({ids}): give its id"
            )
        _, task = found[0]
        return task, self._owner(task, owners)

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
