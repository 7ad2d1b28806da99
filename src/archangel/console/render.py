"""Text and JSON formatting for console replies: tables, ages, details, stacks.

Pure functions over plain values and :class:`~archangel.ProcessInfo`
records: no I/O, no threads, no knowledge of sessions or commands.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from types import FrameType
from typing import Any

from ..kernel.process import Process, ProcessInfo

__all__ = [
    "clip",
    "describe_error",
    "detail_lines",
    "fit",
    "format_age",
    "format_details",
    "format_ms",
    "format_stack",
    "format_time",
    "info_dict",
    "json_with_list",
    "process_row",
    "safe_details",
    "snapshot",
    "table",
    "to_json",
]

_PROCESS_HEADERS = ("PID", "KIND", "STATE", "AGE", "NAME", "DETAILS")
_DETAILS_WIDTH = 60
_NAME_WIDTH = 32


def format_age(seconds: float | None) -> str:
    """A short duration: ``4.2s``, ``5m03s``, ``3h05m``, ``2d03h``; ``-`` if unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_ms(seconds: float) -> str:
    """Seconds as milliseconds, with a precision that suits the size."""
    ms = seconds * 1000.0
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{seconds:.2f} s"


def format_time(timestamp: float | None) -> str:
    """A wall-clock time (local), or ``-``."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) + (
        f".{int(timestamp * 1000) % 1000:03d}"
    )


def _short(value: Any) -> str:
    if (
        isinstance(value, tuple)
        and len(value) >= 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        return f"{value[0]}:{value[1]}"  # a socket address
    if isinstance(value, Mapping):
        return "{" + " ".join(f"{k}={_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, marked with ``...`` when cut."""
    text = " ".join(text.split())  # no newlines or tabs inside a table cell
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def format_details(details: Mapping[str, Any], width: int | None = _DETAILS_WIDTH) -> str:
    """``key=value`` pairs on one line, cut to ``width`` (None: never cut)."""
    if not details:
        return ""
    text = " ".join(f"{k}={_short(v)}" for k, v in details.items())
    return " ".join(text.split()) if width is None else clip(text, width)


def detail_lines(details: Mapping[str, Any]) -> list[str]:
    """``key=value`` pairs, one a line and never cut (for ``info``)."""
    return [" ".join(f"{k}={_short(v)}".split()) for k, v in details.items()]


def safe_details(process: Process) -> Mapping[str, Any]:
    """``process.details()``, or the error it raised (it runs on another thread)."""
    try:
        return process.details()
    except Exception as exc:
        return {"details-error": describe_error(exc)}


def describe_error(error: BaseException) -> str:
    """An exception as an operator reads it: ``ValueError: bad header`` (not its repr)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def process_row(process: Process, now: float) -> tuple[str, ...]:
    """One ``ps`` row for a live process (read from the console's thread).

    Its DETAILS are whole: :func:`fit` cuts them to the screen's width.
    """
    started = process.started
    return (
        str(process.pid),
        process.kind,
        process.state.value,
        format_age(None if started is None else now - started),
        clip(process.name, _NAME_WIDTH),
        format_details(safe_details(process), None),
    )


#: The fewest columns the last column of a table is cut to, however narrow the screen.
_MIN_LAST = 16


def fit(headers: Sequence[str], rows: Iterable[Sequence[str]], width: int) -> list[list[str]]:
    """``rows`` with the last column cut to what is left of ``width`` columns.

    The other columns keep their width (as :func:`table` lays them out); the
    last one gets the rest of the screen, at least :data:`_MIN_LAST`.
    """
    fitted = [list(row) for row in rows]
    if not fitted:
        return fitted
    used = sum(
        max(len(header), *(len(row[i]) for row in fitted)) + 2
        for i, header in enumerate(headers[:-1])
    )
    room = max(_MIN_LAST, width - used)
    for row in fitted:
        row[-1] = clip(row[-1], room)
    return fitted


def snapshot(process: Process) -> ProcessInfo:
    """A :class:`ProcessInfo` of ``process`` that survives a failing ``details()``."""
    return ProcessInfo(
        process.pid,
        process.kind,
        process.name,
        process.state,
        process.started,
        process.ended,
        process.exit_reason,
        process.error,
        safe_details(process),
    )


def info_dict(info: ProcessInfo, **extra: Any) -> dict[str, Any]:
    """``info.as_dict()`` plus ``extra``, for JSON replies."""
    data = info.as_dict()
    data.update(extra)
    return data


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: int = 1) -> str:
    """Rows under headers in aligned columns; the first ``right`` columns right-aligned.

    The last column is not padded.
    """
    rows = [tuple(headers), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i < right else cell.ljust(widths[i])
            for i, cell in enumerate(row[:-1])
        ]
        cells.append(row[-1])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_stack(frames: Sequence[FrameType], limit: int = 50) -> str:
    """Frames (outermost first) as ``traceback`` text, keeping the innermost ``limit``."""
    cut = len(frames) - limit
    frames = frames[-limit:]
    summary = traceback.StackSummary.extract(((f, f.f_lineno) for f in frames), lookup_lines=True)
    text = "".join(summary.format()).rstrip("\n")
    if cut > 0:
        text = f"  ... {cut} outer frames not shown\n" + text
    return text


def to_json(value: Any) -> str:
    """Compact one-line JSON (anything unknown as its ``str``)."""
    return json.dumps(value, separators=(",", ":"), default=str)


def json_with_list(head: Mapping[str, Any], key: str, parts: Sequence[str]) -> str:
    """The JSON object ``head`` (not empty) plus one member: ``key``, the encoded ``parts``."""
    return to_json(dict(head))[:-1] + f",{to_json(key)}:[{','.join(parts)}]}}"
