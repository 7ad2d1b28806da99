"""The master console's commands: every worker's processes in one view.

``workers`` lists the master's workers; ``ps`` asks every worker's console
for ``ps --json`` at once and shows the processes in one table with a WORKER
column; ``info``, ``where``, ``kill`` and ``stack`` are passed to the worker
that holds the process; ``on WORKER COMMAND`` passes any command; ``stop``,
``reload`` and ``upgrade`` signal the master itself, as ``kill -TERM`` /
``-HUP`` / ``-URG`` would. Each worker is asked through :mod:`~archangel.console.relay` with a
timeout of its own, so one worker that does not answer is shown as such and
never holds the others' answers up.

A process is addressed as ``WORKER:PID``: WORKER is the worker's pid (as
``workers`` and ``ps`` show it) or its place (1..N), PID the process's pid
in that worker. A bare ``PID`` is taken when exactly one worker has a
process with that pid (every worker's pids start at 1).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from .commands import Command, CommandError, Context, Terminal, clip_word, parse_options, plural
from .listing import _PS_ALIASES, _PS_OPTIONS, _more_args, _page
from .relay import NotAnswering, ask, ask_json
from .render import clip, fit, format_age, format_details, table, to_json

__all__ = ["WorkerTable", "fleet_commands"]

_HEADERS = ("WORKER", "PID", "KIND", "STATE", "AGE", "NAME", "DETAILS")
_WORKER_HEADERS = ("PLACE", "PID", "STATE", "UPTIME", "RESTARTS", "PROCESSES")
_MAX_ROWS = 10_000
#: How long a command that changes something may take in a worker (``kill`` waits 5 s).
_ACTION_EXTRA = 10.0

_SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "pid": lambda p: p.get("pid") or 0,
    "kind": lambda p: p.get("kind") or "",
    "name": lambda p: p.get("name") or "",
    "state": lambda p: p.get("state") or "",
    "started": lambda p: p.get("started") or 0.0,
}


class WorkerTable(Protocol):
    """What the master console reads of a master of workers.

    :class:`archangel.service.workers.Master` is one.
    """

    @property
    def name(self) -> str:
        """The App's name."""
        ...

    def worker_table(self) -> list[dict[str, Any]]:
        """The workers now, by place: each a dict of ``place``, ``pid``,
        ``state`` (``starting``, ``ready``, ``stopping``), ``started`` (epoch
        seconds), ``restarts`` and ``console`` (its console's Unix socket, or None)."""
        ...


Answer = tuple[dict[str, Any], Any]


class _Fleet:
    def __init__(self, context: Context, master: WorkerTable, timeout: float) -> None:
        self.context = context
        self.master = master
        self.timeout = timeout

    # -- asking the workers -------------------------------------------------------

    def _worker(self, text: str) -> dict[str, Any]:
        rows = self.master.worker_table()
        try:
            number = int(text)
        except ValueError:
            what = f"not a worker: {clip_word(text)} (a worker's pid or place)"
            raise CommandError(what) from None
        for key in ("pid", "place"):
            for row in rows:
                if row[key] == number and row["state"] != "stopping":
                    return row
        known = ", ".join(f"{row['pid']} (place {row['place']})" for row in rows) or "none"
        raise CommandError(f"no worker {number}: the workers are {known}")

    async def _one(self, row: dict[str, Any], line: str, *, as_json: bool, timeout: float) -> Any:
        path = row.get("console")
        if not path:
            return NotAnswering("has no console")
        try:
            if as_json:
                return await ask_json(path, line, timeout)
            return await ask(path, line, timeout)
        except NotAnswering as exc:
            return exc

    async def _all(self, line: str, *, stopping: bool = False) -> list[Answer]:
        """``line`` asked of every worker (with ``stopping``, those stopping too) at once.

        Each worker comes with its answer, or the :class:`NotAnswering` error.
        """
        rows = self.master.worker_table()
        if not stopping:
            rows = [row for row in rows if row["state"] != "stopping"]
        answers = await asyncio.gather(
            *(self._one(row, line, as_json=True, timeout=self.timeout) for row in rows)
        )
        return list(zip(rows, answers, strict=True))

    async def _forward(self, row: dict[str, Any], line: str, *, changes: bool = False) -> str:
        timeout = self.timeout + (_ACTION_EXTRA if changes else 0.0)
        answer = await self._one(row, line, as_json=False, timeout=timeout)
        if isinstance(answer, NotAnswering):
            raise CommandError(f"worker {row['pid']}: {answer}")
        return str(answer).rstrip("\n")

    async def _address(self, text: str) -> tuple[dict[str, Any], int]:
        """The worker and pid ``WORKER:PID`` (or a bare ``PID`` only one worker has) names."""
        worker_text, colon, pid_text = text.rpartition(":")
        try:
            pid = int(pid_text)
        except ValueError:
            pid = 0
        if pid <= 0:
            raise CommandError(f"not a process: {clip_word(text)} (WORKER:PID, or PID)")
        if colon:
            return self._worker(worker_text), pid
        holders = [
            row
            for row, answer in await self._all(f"info {pid} --json")
            if not isinstance(answer, NotAnswering) and answer.get("ended") is None
        ]
        if not holders:
            raise CommandError(f"no worker has a process with pid {pid}")
        if len(holders) > 1:
            which = ", ".join(f"{row['pid']}:{pid}" for row in holders)
            raise CommandError(f"pid {pid} is in {len(holders)} workers: say which ({which})")
        return holders[0], pid

    # -- commands -----------------------------------------------------------------

    async def workers(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--json": bool})
        if positional:
            raise CommandError("usage: workers [--json]")
        answers = await self._all("ps --json --limit 1", stopping=True)
        now = time.time()
        entries = []
        for row, answer in answers:
            entry = {k: row[k] for k in ("place", "pid", "state", "started", "restarts")}
            entry["uptime"] = max(0.0, now - row["started"])
            if isinstance(answer, NotAnswering):
                entry["processes"] = None
                if row["state"] == "ready":  # (one starting or stopping may have no console)
                    entry["state"] = "not answering"
                entry["console"] = str(answer)
            else:
                entry["processes"] = answer.get("total")
            entries.append(entry)
        if opts.get("--json"):
            return to_json({"master": os.getpid(), "count": len(entries), "workers": entries})
        if not entries:
            return "no workers running"
        rows = [
            (
                str(e["place"]),
                str(e["pid"]),
                e["state"],
                format_age(e["uptime"]),
                str(e["restarts"]),
                "-" if e["processes"] is None else str(e["processes"]),
            )
            for e in entries
        ]
        text = table(_WORKER_HEADERS, rows, right=2)
        return f"{text}\nmaster {os.getpid()}: {plural(len(entries), 'worker')}"

    async def ps(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, _PS_OPTIONS, _PS_ALIASES)
        if len(positional) > 1:
            raise CommandError(f"ps takes at most one KIND, got {clip_word(' '.join(positional))}")
        limit, offset = _page(opts)
        if offset + limit > _MAX_ROWS:
            raise CommandError(f"--offset plus --limit must be at most {_MAX_ROWS} here")
        sort = opts.get("--sort")
        key = None
        if sort is not None:
            key = _SORT_KEYS.get(sort.lstrip("-"))
            if key is None:
                keys = ", ".join(_SORT_KEYS)
                raise CommandError(f"cannot sort by {clip_word(sort)}: expected one of {keys}")
        forward = ["ps", "--json", "--limit", str(offset + limit), *positional]
        for option in ("--kind", "--state", "--name", "--sort"):
            if option in opts:
                forward += [option, str(opts[option])]
        total, merged, notes, counts = 0, [], [], []
        for row, answer in await self._all(shlex.join(forward)):
            if isinstance(answer, NotAnswering):
                notes.append(f"worker {row['pid']} (place {row['place']}): {answer}")
                counts.append({"pid": row["pid"], "place": row["place"], "error": str(answer)})
                continue
            total += int(answer.get("total", 0))
            counts.append({"pid": row["pid"], "place": row["place"], "total": answer.get("total")})
            merged += [{"worker": row["pid"], **p} for p in answer.get("processes", ())]
        if key is not None:  # each worker's first offset+limit, merged: the first overall
            merged.sort(key=key, reverse=bool(sort and sort.startswith("-")))
        page = merged[offset : offset + limit]
        if opts.get("--json"):
            end = offset + len(page)
            head: dict[str, Any] = {"total": total, "offset": offset, "limit": limit}
            head["count"] = len(page)
            head["next_offset"] = end if end < total else None
            return to_json({**head, "workers": counts, "processes": page})
        now = time.time()
        rows = (
            (
                str(p["worker"]),
                str(p.get("pid")),
                str(p.get("kind")),
                str(p.get("state")),
                format_age(None if p.get("started") is None else now - p["started"]),
                clip(str(p.get("name")), 32),
                format_details(p.get("details") or {}, None),
            )
            for p in page
        )
        lines = []
        if page:
            lines.append(table(_HEADERS, fit(_HEADERS, rows, terminal.width), right=2))
            shown = f"showing {offset + 1}-{offset + len(page)} of {total}"
            shown += f" in {plural(len(counts) - len(notes), 'worker')}"
            if offset + len(page) < total:
                terminal.more = ["ps", *_more_args(args, offset + len(page))]
                shown += " (Enter for more)"
            lines.append(shown)
        else:
            lines.append(f"no processes match in {plural(len(counts) - len(notes), 'worker')}")
        return "\n".join(lines + notes)

    async def info(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--json": bool})
        if len(positional) != 1:
            raise CommandError("usage: info WORKER:PID [--json]")
        row, pid = await self._address(positional[0])
        if opts.get("--json"):
            return await self._forward(row, f"info {pid} --json")
        answer = await self._forward(row, f"info {pid}")
        return f"worker {row['pid']} (place {row['place']})\n{answer}"

    async def where(self, args: list[str], terminal: Terminal) -> str:
        if len(args) != 1:
            raise CommandError("usage: where WORKER:PID")
        row, pid = await self._address(args[0])
        return f"worker {row['pid']}: " + await self._forward(row, f"where {pid}")

    async def kill(self, args: list[str], terminal: Terminal) -> str:
        if not args:
            raise CommandError("usage: kill WORKER:PID...")
        targets: dict[int, tuple[dict[str, Any], list[int]]] = {}
        for arg in args:
            row, pid = await self._address(arg)
            targets.setdefault(row["pid"], (row, []))[1].append(pid)
        lines = []
        for row, pids in targets.values():
            answer = await self._forward(row, shlex.join(["kill", *map(str, pids)]), changes=True)
            lines.append(f"worker {row['pid']}: {answer}")
        return "\n".join(lines)

    async def stack(self, args: list[str], terminal: Terminal) -> str:
        if len(args) != 1:
            raise CommandError("usage: stack WORKER")
        row = self._worker(args[0])
        return f"worker {row['pid']}: " + await self._forward(row, "stack")

    async def on(self, args: list[str], terminal: Terminal) -> str:
        worker_text, _, line = args[0].strip().partition(" ")
        if not worker_text or not line.strip():
            raise CommandError("usage: on WORKER COMMAND [ARGS...]")
        row = self._worker(worker_text)
        return await self._forward(row, line.strip(), changes=True)

    async def stop(self, args: list[str], terminal: Terminal) -> str:
        os.kill(os.getpid(), signal.SIGTERM)  # the master's own handler: one way to stop
        count = len(self.master.worker_table())
        return f"stopping: the master stops {plural(count, 'worker')} gracefully"

    async def upgrade(self, args: list[str], terminal: Terminal) -> str:
        os.kill(os.getpid(), signal.SIGURG)
        return (
            "upgrading: a new master is executed with the listening sockets and stops this "
            "one once its workers are ready; this session ends with this master"
        )

    async def reload(self, args: list[str], terminal: Terminal) -> str:
        os.kill(os.getpid(), signal.SIGHUP)
        return "rolling every worker: a fresh one ready before an old one stops (see workers)"


def fleet_commands(context: Context, master: WorkerTable, timeout: float) -> list[Command]:
    """The master console's commands over ``master``'s workers (each answers in ``timeout`` s)."""
    fleet = _Fleet(context, master, timeout)
    return [
        Command(
            "workers",
            fleet.workers,
            "workers [--json]",
            "the workers: place, pid, state, uptime, restarts, processes",
        ),
        Command(
            "ps",
            fleet.ps,
            "ps [KIND] [-k KIND] [-s STATE] [-n NAME] [--sort KEY] [-l N] [-o N] [--json]",
            "every worker's processes in one list (paged)",
            "The options of a worker's ps; the list is by worker, then pid, unless\n"
            "--sort says otherwise. A worker that does not answer in time is named\n"
            'under the list. --json adds each worker\'s total (or error) under "workers".',
        ),
        Command("info", fleet.info, "info WORKER:PID [--json]", "everything about one process"),
        Command("where", fleet.where, "where WORKER:PID", "where a process's task is waiting"),
        Command(
            "kill",
            fleet.kill,
            "kill WORKER:PID...",
            "kill processes in any worker",
            changes=True,
        ),
        Command("stack", fleet.stack, "stack WORKER", "a worker's loop thread's stack"),
        Command(
            "on",
            fleet.on,
            "on WORKER COMMAND [ARGS...]",
            "run any console command in one worker (history, pipes, stats...)",
            changes=True,
            raw=True,
        ),
        Command(
            "stop",
            fleet.stop,
            "stop",
            "stop the service: every worker, then the master",
            changes=True,
        ),
        Command("reload", fleet.reload, "reload", "roll every worker (as SIGHUP)", changes=True),
        Command(
            "upgrade",
            fleet.upgrade,
            "upgrade",
            "re-execute the master with new code, no connection refused (as SIGURG)",
            changes=True,
        ),
    ]
