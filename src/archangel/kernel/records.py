"""Records: what a process is and was, as plain data.

:class:`ProcessState` and :class:`ExitReason` name a process's lifecycle;
:class:`ProcessInfo` is the snapshot that ``ps`` lists and the history keeps,
and :class:`History` the read-only view of a manager's completed processes.
No behaviour here: :mod:`archangel.kernel.process` and :mod:`archangel.kernel.manager` use
these.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, overload

__all__ = ["ExitReason", "History", "ProcessInfo", "ProcessState"]


class ProcessState(enum.Enum):
    """Where a process is in its life: ``NEW → RUNNING → EXITED``."""

    NEW = "new"
    RUNNING = "running"
    EXITED = "exited"


class ExitReason(enum.Enum):
    """Why a process exited."""

    NORMAL = "normal"
    """It ended on its own (the peer closed, the coroutine returned)."""
    ERROR = "error"
    """It ended with an exception, kept in ``process.error``."""
    KILLED = "killed"
    """``kill()`` ended it (an operator, or a shutdown timeout)."""
    SHUTDOWN = "shutdown"
    """It ended after ``stop()`` asked it to, e.g. during a graceful shutdown."""


_EXITED = ProcessState.EXITED


class ProcessInfo(NamedTuple):
    """A snapshot of one process: what ``ps`` lists and ``history`` keeps.

    A record, never the process itself, so keeping one does not keep the
    protocol, its transport or its buffers alive. Times are wall-clock
    seconds (``time.time()``); ``ended`` is None while the process runs.
    """

    pid: int | None
    kind: str
    name: str
    state: ProcessState
    started: float | None
    ended: float | None
    exit_reason: ExitReason | None
    error: BaseException | None
    details: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (enums as their values, the error as its repr)."""
        return {
            "pid": self.pid,
            "kind": self.kind,
            "name": self.name,
            "state": self.state.value,
            "started": self.started,
            "ended": self.ended,
            "exit_reason": self.exit_reason.value if self.exit_reason else None,
            "error": repr(self.error) if self.error is not None else None,
            "details": {k: _jsonable(v) for k, v in self.details.items()},
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


# pid, kind, name, started, ended, exit_reason, error, details. The name is
# the process's own, or its class when it has none: the class's __name__ is
# read when a record is, not on every exit.
_Record = tuple[
    int | None,
    str,
    str | type,
    float | None,
    float | None,
    ExitReason,
    BaseException | None,
    Any,
]


def _info(record: _Record) -> ProcessInfo:
    pid, kind, name, started, ended, reason, error, details = record
    if not isinstance(name, str):
        name = name.__name__
    return ProcessInfo(
        pid, kind, name, ProcessState.EXITED, started, ended, reason, error, details
    )


class History(Sequence[ProcessInfo]):
    """A read-only view of a manager's completed processes (see ``manager.history``)."""

    __slots__ = ("_records",)

    def __init__(self, records: collections.deque[_Record]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> ProcessInfo: ...
    @overload
    def __getitem__(self, index: slice) -> list[ProcessInfo]: ...

    def __getitem__(self, index: int | slice) -> ProcessInfo | list[ProcessInfo]:
        if isinstance(index, slice):
            return [_info(r) for r in list(self._records)[index]]
        return _info(self._records[index])

    def __iter__(self) -> Iterator[ProcessInfo]:
        return map(_info, list(self._records))  # list(deque) is one atomic copy

    @property
    def maxlen(self) -> int | None:
        """How many records it keeps at most (the manager's ``history`` argument)."""
        return self._records.maxlen

    def __repr__(self) -> str:
        return f"<History {len(self)} of at most {self._records.maxlen}>"
