"""The harness every script in ``benchmarks/`` shares: how rounds run, what each figure means.

A benchmark measures one or more *variants* (archangel's way and a baseline:
the raw protocol, a plain loop, another library) in **interleaved rounds**:
every round runs each variant once, and the order rotates from round to
round (:func:`order`), so a drift in the machine's speed hits every variant
alike and none is always first. A round gives one *sample* per variant (a
rate, a cost per operation, a latency). Then, with one meaning everywhere:

median
    The median of a variant's per-round samples (:func:`median`).
spread
    How far those samples lie apart: their range, printed as ``min-max
    LOW-HIGH``, and the same range relative to the median, ``(max - min) /
    median`` as a percentage (:class:`Summary`, :func:`spread`). ``0%``: every
    round agreed; ``20%``: the slowest and the fastest round differ by a fifth
    of the median.
ratio
    A variant's median divided by the baseline's median, both measured in the
    same run (:func:`ratio`); each script says which way round (for rates,
    archangel / baseline, higher is better; for costs, lower is better).
    Never compare against a figure from another run.
verdict
    One line per target, ``target WHAT OP LIMIT: met (VALUE)`` or ``...: not
    met (VALUE)`` (:func:`verdict`). Targets are printed, never asserted: a
    script exits with status 0 whether its targets are met or not (a busy
    machine is no error); a non-zero status means the benchmark itself broke
    (a server did not start, a client failed, counters did not match).
stall
    The app loop's worst gap between two turns of a task spinning on
    ``await asyncio.sleep(0)`` while some work runs (:func:`worst_gap_while`):
    what that work cost the loop's latency, the operating system's scheduling
    included (compare with the same gap measured while nothing else runs).

Every script adds its own figures (CPU use, p99, per-round-pair ratios) on top,
and says what they mean where it prints them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def median(values: Iterable[float]) -> float:
    """The median of the samples (per round): the figure each variant is reported by."""
    return statistics.median(list(values))


@dataclasses.dataclass(frozen=True)
class Summary:
    """A variant's samples summed up: the median and the range around it."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        """The summary of ``values`` (at least one sample)."""
        samples = list(values)
        if not samples:
            raise ValueError("no samples to summarise")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    @property
    def relative(self) -> float:
        """``(max - min) / median``: the spread as a fraction of the median (nan if it is 0)."""
        return (self.high - self.low) / self.median if self.median else math.nan


def spread(values: Iterable[float], fmt: str = ".3g", unit: str = "", scale: float = 1) -> str:
    """``min-max LOW-HIGH UNIT, spread P%``: the range of the samples, and relative to the median.

    ``scale`` multiplies the samples before they are formatted (``1e9`` for
    seconds shown as ns); the relative figure does not depend on it.
    """
    s = Summary.of(values)
    text = f"min-max {s.low * scale:{fmt}}-{s.high * scale:{fmt}}{unit}"
    return f"{text}, spread {s.relative * 100:.0f}%"


def figure(values: Iterable[float], fmt: str = ".3g", unit: str = "", scale: float = 1) -> str:
    """``MEDIAN UNIT (min-max LOW-HIGH, spread P%)``: how one variant is reported."""
    samples = list(values)
    return f"{median(samples) * scale:{fmt}}{unit} ({spread(samples, fmt, unit, scale)})"


def ratio(values: Iterable[float], baseline: Iterable[float]) -> float:
    """The median of ``values`` over the median of ``baseline``, measured in the same run."""
    return median(values) / median(baseline)


def order(names: Sequence[T], round_number: int) -> list[T]:
    """The variants in the order round ``round_number`` runs them: rotated one step a round."""
    shift = round_number % len(names) if names else 0
    return [*names[shift:], *names[:shift]]


def interleaved(
    variants: Mapping[str, Callable[[], float]], rounds: int
) -> dict[str, list[float]]:
    """Run every variant once a round for ``rounds`` rounds (order rotating): samples by name."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds):
        for name in order(list(variants), round_number):
            samples[name].append(variants[name]())
    return samples


async def ainterleaved(
    variants: Mapping[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, list[float]]:
    """:func:`interleaved` for coroutine functions, awaited one after the other."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds):
        for name in order(list(variants), round_number):
            samples[name].append(await variants[name]())
    return samples


def met(value: float, target: float, *, at_least: bool) -> bool:
    """Whether ``value`` meets ``target``: ``>=`` if ``at_least``, else ``<=``."""
    return value >= target if at_least else value <= target


def verdict(
    what: str, value: float, target: float, *, at_least: bool, fmt: str = ".2f", unit: str = ""
) -> str:
    """The verdict line: ``target WHAT >= LIMIT: met (VALUE)``, or ``not met``.

    ``at_least`` says which side of the limit meets it (``>=`` for rates and
    ratios of rates, ``<=`` for costs, latencies and memory).
    """
    op = ">=" if at_least else "<="
    outcome = "met" if met(value, target, at_least=at_least) else "not met"
    return f"target {what} {op} {target:{fmt}}{unit}: {outcome} ({value:{fmt}}{unit})"


async def worst_gap_while(work: asyncio.Future[object]) -> float:
    """The longest the app loop went without running this task, until ``work`` is done."""
    worst = 0.0
    last = time.perf_counter()
    while not work.done():
        await asyncio.sleep(0)
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    return worst
