"""Publish throughput of the bus against a plain loop calling the same functions.

For 1, 10 and 100 subscribers, sync and async, this times ``await bus.publish(channel, x)``
and the loop a programmer would write instead (``for f in subscribers: f(x)``, or
``await f(x)`` for coroutine functions). The variants are interleaved in rounds (the
order rotating), so drift in the machine's speed hits all of them alike; each line shows
the median cost of one publish, the spread across rounds (min-max, and relative to the
median) and the ratio bus/plain of the medians, as ``_harness.py`` defines them. The
subscribers do almost nothing (``return x``): the worst case for the bus's overhead.

Target: a sync publish to 10 subscribers costs at most 2x the plain calls.

Run: ``python benchmarks/bus.py`` (about 15 seconds; ``--rounds 5`` for a smoke run;
``--loop uvloop`` to use uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from _harness import median, order, spread, verdict

from archangel.bus.bus import Bus

ROUNDS = 21
SAMPLE_SECONDS = 0.02
TARGET = 2.0
SIZES = (1, 10, 100)

Runner = Callable[[int], Awaitable[None]]


def make_sync(n: int) -> list[Callable[[int], int]]:
    """``n`` distinct functions, as distinct subscribers would be."""

    def one() -> Callable[[int], int]:
        def subscriber(x: int) -> int:
            return x

        return subscriber

    return [one() for _ in range(n)]


def make_async(n: int) -> list[Callable[[int], Awaitable[int]]]:
    """``n`` distinct coroutine functions."""

    def one() -> Callable[[int], Awaitable[int]]:
        async def subscriber(x: int) -> int:
            return x

        return subscriber

    return [one() for _ in range(n)]


def variants(n: int) -> dict[str, Runner]:
    """The four timed loops for ``n`` subscribers, each running ``count`` publishes."""
    sync_funcs = tuple(make_sync(n))
    async_funcs = tuple(make_async(n))
    bus = Bus()
    for function in sync_funcs:
        bus.subscribe("sync", function)
    for coroutine_function in async_funcs:
        bus.subscribe("async", coroutine_function)
    publish = bus.publish

    async def plain_sync(count: int) -> None:
        for _ in range(count):
            for function in sync_funcs:
                function(1)

    async def bus_sync(count: int) -> None:
        for _ in range(count):
            await publish("sync", 1)

    async def plain_async(count: int) -> None:
        for _ in range(count):
            for function in async_funcs:
                await function(1)

    async def bus_async(count: int) -> None:
        for _ in range(count):
            await publish("async", 1)

    return {
        "plain sync": plain_sync,
        "bus sync": bus_sync,
        "plain async": plain_async,
        "bus async": bus_async,
    }


async def calibrate(runner: Runner) -> int:
    """How many iterations take about SAMPLE_SECONDS."""
    count = 1
    while True:
        start = time.perf_counter()
        await runner(count)
        elapsed = time.perf_counter() - start
        if elapsed > SAMPLE_SECONDS / 4:
            return max(1, int(count * SAMPLE_SECONDS / elapsed))
        count *= 4


async def measure(rounds: int) -> dict[tuple[int, str], list[float]]:
    """Per-publish seconds for every (size, variant), one sample per round."""
    table = {n: variants(n) for n in SIZES}
    counts = {
        (n, name): await calibrate(run) for n, runs in table.items() for name, run in runs.items()
    }
    samples: dict[tuple[int, str], list[float]] = {key: [] for key in counts}
    keys = list(counts)
    for round_number in range(rounds):
        for n, name in order(keys, round_number):
            count = counts[n, name]
            start = time.perf_counter()
            await table[n][name](count)
            samples[n, name].append((time.perf_counter() - start) / count)
    return samples


async def empty_channel_cost() -> tuple[float, float]:
    """Seconds per publish to a channel nobody subscribed to, and per has_subscribers call."""
    bus = Bus()
    count = 200_000
    start = time.perf_counter()
    for _ in range(count):
        await bus.publish("nobody", 1)
    publish = (time.perf_counter() - start) / count
    start = time.perf_counter()
    for _ in range(count):
        bus.has_subscribers("nobody")
    return publish, (time.perf_counter() - start) / count


async def main(rounds: int) -> bool:
    samples = await measure(rounds)
    print(f"bus publish vs plain calls, {rounds} interleaved rounds: median cost of one publish")
    header = f"{'subscribers':>11}  {'kind':<5}  {'plain':>11}  {'bus':>11}  {'bus/plain':>9}"
    print(f"{header}  spread")
    ratios: dict[tuple[int, str], float] = {}
    for n in SIZES:
        for kind in ("sync", "async"):
            plain = samples[n, f"plain {kind}"]
            bus = samples[n, f"bus {kind}"]
            ratio = median(bus) / median(plain)
            ratios[n, kind] = ratio
            print(
                f"{n:>11}  {kind:<5}  {median(plain) * 1e6:8.3f} us  {median(bus) * 1e6:8.3f} us  "
                f"{ratio:8.2f}x  plain {spread(plain, '.3f', ' us', 1e6)}; "
                f"bus {spread(bus, '.3f', ' us', 1e6)}"
            )
    empty, check = await empty_channel_cost()
    print(f"publish to a channel without subscribers: {empty * 1e9:.0f} ns")
    print(f"has_subscribers(channel): {check * 1e9:.0f} ns")
    ratio = ratios[10, "sync"]
    print(verdict("sync publish to 10 subscribers, bus/plain", ratio, TARGET, at_least=False))
    return ratio <= TARGET


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds ({ROUNDS})")
    options = parser.parse_args()
    if options.loop == "uvloop":
        import uvloop

        uvloop.run(main(options.rounds))
    else:
        asyncio.run(main(options.rounds))
