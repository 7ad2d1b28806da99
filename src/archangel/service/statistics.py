"""Statistics: every counter of a service, nested, with pyzenkit's rates.

:func:`counters` gathers what a manager counts, in one tree nested as the
counters are: the totals (started, exited, killed, failed, running), per
kind (``kinds``, each with its processes' own counts under ``user``), the
manager's own counts (``user``: what ``App.inc`` counted) and every live
pipeline (``pipelines``: its train's counters, each cog's under ``cogs``,
its own counts under ``user``).

:func:`calc_statistics` turns two readings of such a tree into pyzenkit's
statistics: for every number, its count, its increment since the previous
reading, that increment per second and as a percentage of the count.
:class:`Statistics` remembers the previous reading for it. This module only
builds dicts; the runlog (:mod:`archangel.service.dumps`) and the App's
statistics line use it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidArgument
from ..kernel.manager import ProcessManager
from ..kernel.process import Process

__all__ = ["Statistics", "calc_statistics", "counters", "format_statistics"]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def calc_statistics(
    current: Mapping[str, Any], previous: Mapping[str, Any], seconds: float
) -> dict[str, Any]:
    """pyzenkit's ``calc_statistics``: count, increment, speed and percentage of every counter.

    ``current`` and ``previous`` are two readings of the same nested
    mapping of counters, ``seconds`` apart. The result is nested as
    ``current`` is; each number in it becomes::

        {"cnt": count, "inc": count - before, "spd": inc / seconds, "pct": 100 * inc / count}

    where ``before`` is the same key's number in ``previous`` (0 if it has
    none, as for the first reading: then ``inc`` is the count and ``pct``
    100). ``pct`` is pyzenkit's "percentage increase": the share of the count
    that came in since the previous reading, in percent (pyzenkit computes
    ``inc / (cnt / 100)``).

    As pyzenkit, a mapping in ``current`` is recursed into (against the
    same key of ``previous``, or nothing). Unlike pyzenkit, which makes
    every member 0 for a count that is not positive, a count of 0 or less
    keeps its own ``cnt``, ``inc`` and ``spd`` and only ``pct`` is 0 (it has no
    share to be). For a counter, which never goes down, that is the same
    (0 now means 0 before); for a gauge that drops to 0 (``running``,
    ``in_flight``) the increment then says by how much, as it does for a
    gauge that drops to anything else. ``seconds`` of 0 gives a speed of 0
    where pyzenkit divides by zero. Values that are not numbers (a name, a
    state; bools) are left out.

    Raises:
        InvalidArgument: ``seconds`` is negative or not a finite number.
    """
    if not _number(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(
            f"calc_statistics: seconds must be a finite number >= 0, not {seconds!r}"
        )
    return _calc(current, previous, seconds)


def _calc(
    current: Mapping[str, Any], previous: Mapping[str, Any], seconds: float
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in current.items():
        before = previous.get(key)
        if isinstance(value, Mapping):
            result[key] = _calc(value, before if isinstance(before, Mapping) else {}, seconds)
        elif _number(value):
            inc = value - (before if _number(before) else 0)
            result[key] = {
                "cnt": value,
                "inc": inc,
                "spd": inc / seconds if seconds > 0 else 0.0,
                "pct": inc / (value / 100) if value > 0 else 0.0,
            }
    return result


def _unique(names: list[str], tags: list[object]) -> list[str]:
    """``names`` as keys: one that occurs more than once gets ``#tag`` on every occurrence."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [f"{n}#{t}" if seen[n] > 1 else n for n, t in zip(names, tags, strict=True)]


def _pipeline(process: Any) -> dict[str, Any]:
    """A pipeline's counters: its train's, each cog's under ``cogs``, its own under ``user``."""
    tree: dict[str, Any] = dict(process.counters)
    cogs = list(process.cog_counters)
    keys = _unique([c.name for c in cogs], list(range(1, len(cogs) + 1)))
    tree["cogs"] = {key: dict(c) for key, c in zip(keys, cogs, strict=True)}
    user = Process.statistics(process)  # the mixin's: a subclass may use the name itself
    if user:
        tree["user"] = user
    return tree


def counters(manager: ProcessManager) -> dict[str, Any]:
    """Every counter of ``manager``'s service in one nested tree (see the module's notes).

    ``manager.counters`` with ``"pipelines"`` added: each live pipeline
    (``kind == "pipeline"``) under its name, or ``name#pid`` when several
    live pipelines share a name; a cog's key is its name, or ``name#N``
    (its place in the train, from 1) when the train has several of that name.
    """
    tree = manager.counters
    pipelines = [p for p in manager.processes() if p.kind == "pipeline"]
    keys = _unique([p.name for p in pipelines], [p.pid for p in pipelines])
    tree["pipelines"] = {
        key: _pipeline(p)
        for key, p in zip(keys, pipelines, strict=True)
        if hasattr(p, "counters") and hasattr(p, "cog_counters")
    }
    return tree


class Statistics:
    """Readings of a counter tree and pyzenkit's statistics since the previous one.

    Args:
        source: Returns the counters now (a nested mapping), e.g.
            ``lambda: counters(manager)``.
        clock: Seconds, for the time between readings (``time.monotonic``).

    The first reading's increments are since the tracker was made (from
    nothing: every count is new).
    """

    def __init__(
        self,
        source: Callable[[], Mapping[str, Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.clock = clock
        self._previous: Mapping[str, Any] = {}
        self._then = clock()

    def __call__(self) -> tuple[Mapping[str, Any], dict[str, Any], float]:
        """Read now: ``(counters, calc_statistics(counters, previous, seconds), seconds)``."""
        now = self.clock()
        current = self.source()
        seconds = max(now - self._then, 0.0)
        result = calc_statistics(current, self._previous, seconds)
        self._previous, self._then = current, now
        return current, result, seconds


#: The leaves of a pipeline that the one-line summary shows.
_PIPELINE_LEAVES = ("in", "out", "failed", "dropped")


def _leaves(tree: Mapping[str, Any], path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """Every ``(dotted path, {"cnt", "inc", ...})`` of a :func:`calc_statistics` tree."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in tree.items():
        if "cnt" in value and not isinstance(value["cnt"], Mapping):
            found.append((f"{path}{key}", value))
        else:
            found += _leaves(value, f"{path}{key}.")
    return found


def _shown(path: str) -> bool:
    """Whether the one-line summary shows this leaf of the statistics."""
    parts = path.split(".")
    if len(parts) == 1 or parts[0] == "user":
        return True  # the totals and the service's own counts
    if parts[0] == "kinds":
        return parts[2] == "user"  # a kind's own counts; its totals are in the totals
    if parts[0] == "pipelines" and len(parts) == 3:
        return parts[2] in _PIPELINE_LEAVES
    return parts[0] == "pipelines" and parts[2] == "user"


def _figure(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3g}"


def format_statistics(statistics: Mapping[str, Any], seconds: float) -> str:
    """One line summing up a :func:`calc_statistics` result of :func:`counters`.

    The totals, then each kind's own counts, each pipeline's ``in``, ``out``,
    ``failed`` and ``dropped`` and its own counts, then the service's own
    counts; each as ``path count`` and, when it moved, ``(+increment,
    speed/s)``. Cogs are left to the runlog.
    """
    parts = []
    for path, leaf in _leaves(statistics, ""):
        if not _shown(path):
            continue
        text = f"{path} {_figure(leaf['cnt'])}"
        if leaf["inc"]:
            sign = "+" if leaf["inc"] > 0 else ""
            text += f" ({sign}{_figure(leaf['inc'])}, {leaf['spd']:,.1f}/s)"
        parts.append(text)
    return f"statistics over {seconds:.3g} s: " + "; ".join(parts)
