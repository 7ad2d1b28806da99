"""Console commands that list processes: ``ps``, ``info``, ``history``, ``pipes``.

They run on the console's thread and read only thread-safe snapshots:
``manager.processes()`` (one ``list(dict.values())``), ``list(history)``
and attributes of the process objects. ``ps`` filters and counts over the
snapshot but builds rows only for the page it shows, so it stays fast with
100,000 processes.

The app's loop shares the GIL with this thread, and a single long call into
C (one ``list.sort`` of 100,000 names, one ``json.dumps`` of 10,000
records) holds it however short the switch interval is. So sorts are done in
chunks of a few thousand and merged, and JSON is encoded one record at a
time: no single call holds the GIL for more than about a millisecond (the
rules of :mod:`archangel.console.fairness`).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..kernel.process import Process, ProcessInfo, ProcessState
from .commands import Command, CommandError, Context, Terminal, clip_word, parse_options, parse_pid
from .fairness import json_parts, sorted_head
from .render import (
    _PROCESS_HEADERS,
    describe_error,
    detail_lines,
    fit,
    format_age,
    format_details,
    format_time,
    info_dict,
    json_with_list,
    process_row,
    safe_details,
    snapshot,
    table,
    to_json,
)

__all__ = ["listing_commands"]

T = TypeVar("T")

_PAGE = 50
_MAX_PAGE = 10_000
_JSON_ROOM = 128  # bytes kept for the members a JSON page adds after fitting its records

_SORT_KEYS: dict[str, Callable[[Process], Any]] = {
    "pid": lambda p: p.pid or 0,
    "kind": lambda p: p.kind,
    "name": lambda p: p.name,
    "state": lambda p: p.state.value,
    "started": lambda p: p.started or 0.0,
}

_PS_OPTIONS: dict[str, type] = {
    "--kind": str,
    "--state": str,
    "--name": str,
    "--sort": str,
    "--limit": int,
    "--offset": int,
    "--json": bool,
}
_PS_ALIASES = {"-k": "--kind", "-s": "--state", "-n": "--name", "-l": "--limit", "-o": "--offset"}


def _name_matcher(pattern: str) -> Callable[[str], bool]:
    if any(c in pattern for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name, pattern)
    return lambda name: pattern in name


def _state(text: str) -> ProcessState:
    try:
        return ProcessState(text.lower())
    except ValueError:
        states = ", ".join(s.value for s in ProcessState)
        raise CommandError(f"unknown state {clip_word(text)}: expected one of {states}") from None


def _page(opts: dict[str, Any], default: int = _PAGE) -> tuple[int, int]:
    limit = opts.get("--limit", default)
    offset = opts.get("--offset", 0)
    if not 1 <= limit <= _MAX_PAGE:
        raise CommandError(f"--limit must be between 1 and {_MAX_PAGE}, not {limit}")
    if offset < 0:
        raise CommandError(f"--offset must be 0 or more, not {offset}")
    return limit, offset


def _more_args(args: list[str], offset: int) -> list[str]:
    """``args`` with ``--offset`` replaced, to show the next page."""
    kept: list[str] = []
    items = iter(args)
    for arg in items:
        if arg in ("--offset", "-o"):
            next(items, None)
        elif not arg.startswith("--offset="):
            kept.append(arg)
    return [*kept, "--offset", str(offset)]


class _Listing:
    def __init__(self, context: Context) -> None:
        self.context = context

    # -- ps -------------------------------------------------------------------------

    async def ps(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, _PS_OPTIONS, _PS_ALIASES)
        if len(positional) > 1:
            raise CommandError(f"ps takes at most one KIND, got {clip_word(' '.join(positional))}")
        kinds_text = opts.get("--kind") or (positional[0] if positional else None)
        limit, offset = _page(opts)
        procs = self.context.manager.processes()  # one atomic snapshot
        if kinds_text:
            kinds = set(kinds_text.split(","))
            sessions = self.context.console_sessions
            if "console" in kinds and sessions is not None:
                # The console's own sessions (their PIDs are the console's, not the app's).
                procs += sessions.processes()
            procs = [p for p in procs if p.kind in kinds]
        if "--state" in opts:
            state = _state(opts["--state"])
            procs = [p for p in procs if p.state is state]
        if "--name" in opts:
            match = _name_matcher(opts["--name"])
            procs = [p for p in procs if match(p.name)]
        sort = opts.get("--sort", "pid")
        reverse = sort.startswith("-")
        key = _SORT_KEYS.get(sort.lstrip("-"))
        if key is None:
            keys = ", ".join(_SORT_KEYS)
            raise CommandError(f"cannot sort by {clip_word(sort)}: expected one of {keys}")
        total = len(procs)
        if sort == "-pid":  # the snapshot is in PID order
            procs.reverse()
        elif sort != "pid":
            procs = sorted_head(procs, key, reverse, offset + limit)
        page = procs[offset : offset + limit]
        if opts.get("--json"):
            return self._json_page(page, total, offset, limit)
        if not page:
            return f"no processes match (of {len(self.context.manager)} running)"
        now = time.time()
        rows = fit(_PROCESS_HEADERS, (process_row(p, now) for p in page), terminal.width)
        text = table(_PROCESS_HEADERS, rows)
        shown = f"showing {offset + 1}-{offset + len(page)} of {total}"
        if offset + len(page) < total:
            terminal.more = ["ps", *_more_args(args, offset + len(page))]
            shown += " (Enter for more)"
        return f"{text}\n{shown}"

    def _json_page(self, page: list[Process], total: int, offset: int, limit: int) -> str:
        """``ps --json``: the page, or as much of it as fits in one reply.

        ``count`` says how many are shown, ``truncated`` whether the page was
        cut to fit the console's ``max_output``, and ``next_offset`` where the
        next page starts (null after the last).
        """
        head: dict[str, Any] = {"total": total, "offset": offset, "limit": limit}
        budget = self.context.max_output - len(to_json(head)) - _JSON_ROOM
        parts = json_parts((snapshot(p).as_dict() for p in page), budget)
        if page and not parts:
            raise CommandError(
                f"the record of pid {page[0].pid} alone is over the console's reply limit "
                f"({self.context.max_output} bytes)"
            )
        end = offset + len(parts)
        head["count"] = len(parts)
        head["truncated"] = len(parts) < len(page)
        head["next_offset"] = end if end < total else None
        return json_with_list(head, "processes", parts)

    # -- info -----------------------------------------------------------------------

    def _find(self, pid: int) -> tuple[Process | None, ProcessInfo | None]:
        process = self.context.manager.get(pid)  # a dict read: atomic
        if process is not None:
            return process, snapshot(process)
        for record in reversed(list(self.context.manager.history)):
            if record.pid == pid:
                return None, record
        return None, None

    async def info(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--json": bool})
        if len(positional) != 1:
            raise CommandError("usage: info PID [--json]")
        pid = parse_pid(positional[0])
        process, record = self._find(pid)
        if record is None:
            raise CommandError(f"no process {pid} (not running and not in the history)")
        hooks = process.pending_hooks if process is not None else 0
        cls = type(process) if process is not None else None
        class_name = f"{cls.__module__}.{cls.__qualname__}" if cls else "-"
        if opts.get("--json"):
            return to_json(info_dict(record, at_exit_hooks=hooks, cls=class_name))
        now = time.time()
        end = record.ended if record.ended is not None else now
        age = None if record.started is None else end - record.started
        rows = [
            ("pid", str(record.pid)),
            ("name", record.name),
            ("kind", record.kind),
            ("class", class_name),
            ("state", record.state.value),
            ("started", format_time(record.started)),
            ("ended", format_time(record.ended)),
            ("lifetime", format_age(age)),
            ("exit", record.exit_reason.value if record.exit_reason else "-"),
            ("error", describe_error(record.error) if record.error is not None else "-"),
            ("at-exit", f"{hooks} hooks pending" if process is not None else "-"),
        ]
        details = detail_lines(record.details) or ["-"]
        rows += [("details", details[0]), *(("", line) for line in details[1:])]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in rows)

    # -- history --------------------------------------------------------------------

    async def history(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--kind": str, "--json": bool}, {"-k": "--kind"})
        if len(positional) > 1:
            raise CommandError("usage: history [N] [--kind KIND] [--json]")
        count = 20
        if positional:
            try:
                count = int(positional[0])
            except ValueError:
                raise CommandError(f"not a count: {clip_word(positional[0])}") from None
            if not 1 <= count <= _MAX_PAGE:
                raise CommandError(f"N must be between 1 and {_MAX_PAGE}, not {count}")
        records = list(self.context.manager.history)
        if "--kind" in opts:
            records = [r for r in records if r.kind == opts["--kind"]]
        total = len(records)
        records = records[-count:]
        if opts.get("--json"):  # the newest that fit in one reply
            head: dict[str, Any] = {"total": total}
            budget = self.context.max_output - len(to_json(head)) - _JSON_ROOM
            parts = json_parts((r.as_dict() for r in reversed(records)), budget)
            parts.reverse()
            head["count"] = len(parts)
            head["truncated"] = len(parts) < len(records)
            return json_with_list(head, "processes", parts)
        if not records:
            return "no completed processes yet"
        rows = (
            (
                str(r.pid),
                r.kind,
                r.exit_reason.value if r.exit_reason else "-",
                format_time(r.ended),
                format_age(None if r.started is None or r.ended is None else r.ended - r.started),
                r.name,
                describe_error(r.error) if r.error is not None else format_details(r.details),
            )
            for r in records
        )
        headers = ("PID", "KIND", "EXIT", "ENDED", "LIFETIME", "NAME", "ERROR/DETAILS")
        return f"{table(headers, rows)}\nlast {len(records)} of {total} completed (newest last)"

    # -- pipes ----------------------------------------------------------------------

    async def pipes(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--json": bool})
        if positional:
            raise CommandError("usage: pipes [--json]")
        pipes = [p for p in self.context.manager.processes() if p.kind == "pipeline"]
        entries: list[dict[str, Any]] = []
        for p in pipes:
            counters = getattr(p, "counters", None)
            cogs = getattr(p, "cog_counters", None)
            entries.append(
                {
                    "pid": p.pid,
                    "name": p.name,
                    "state": p.state.value,
                    "counters": dict(counters) if counters is not None else None,
                    "cogs": [dict(c) for c in cogs] if cogs is not None else None,
                    "details": dict(safe_details(p)),
                }
            )
        if opts.get("--json"):
            return to_json({"pipelines": entries})
        if not entries:
            return "no pipelines running"
        now = time.time()
        lines = []
        for p, entry in zip(pipes, entries, strict=True):
            age = format_age(None if p.started is None else now - p.started)
            lines.append(f"pid {p.pid}  {p.name}  [{p.state.value}, {age}]")
            counts = entry["counters"] or entry["details"]
            lines.append(f"  {format_details(counts, 200) or '-'}")
            for n, cog in enumerate(entry["cogs"] or (), 1):
                lines.append(f"  cog {n}: {format_details(cog, 200)}")
        return "\n".join(lines)


def listing_commands(context: Context) -> list[Command]:
    """The listing commands, bound to ``context``."""
    listing = _Listing(context)
    return [
        Command(
            "ps",
            listing.ps,
            "ps [KIND] [-k KIND] [-s STATE] [-n NAME] [--sort KEY] [-l N] [-o N] [--json]",
            "list running processes (paged)",
            "Filters: KIND or --kind (comma-separated kinds), --state new|running|exited,\n"
            "--name (a substring, or a glob with * ? [). --sort pid|kind|name|state|started,\n"
            f"'-' in front for descending. --limit (default {_PAGE}, at most {_MAX_PAGE}) and\n"
            "--offset page through the list; Enter shows the next page. --json prints one\n"
            'line: {"total": N, "offset": O, "limit": L, "count": C, "truncated": false,\n'
            '"next_offset": O+C or null, "processes": [...]}; a page that would not fit in\n'
            'one reply is cut short ("truncated": true) and goes on at next_offset.',
        ),
        Command(
            "info",
            listing.info,
            "info PID [--json]",
            "everything about one process (running or in the history)",
        ),
        Command(
            "history",
            listing.history,
            "history [N] [-k KIND] [--json]",
            "the last N completed processes (default 20)",
        ),
        Command("pipes", listing.pipes, "pipes [--json]", "pipelines and their counters"),
    ]
