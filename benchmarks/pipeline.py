"""Pipeline benchmark: a train of sync cogs against a plain loop and aiostream.

Measures, in one run, with the variants interleaved round by round:

* **throughput**: ``--n`` (1,000,000) small dict items through five trivial
  sync cogs, as

  - a plain Python loop calling the same five cog functions (nested ``for``
    over each cog's output, as the cog contract asks);
  - an archangel :class:`~archangel.Pipeline` of those five cogs;
  - an ``aiostream`` pipe of five ``map`` operators doing the same work
    (``--aio-n`` items, 100,000 by default, normalised per item; skipped with
    a message when aiostream is not installed);

* **memory under back-pressure**: an async supply feeding the same five cogs
  and an async sink about 100 times slower per item than the supply, at two
  sizes; ``tracemalloc``'s peak stays flat (the inboxes are bounded), while
  the same producer and consumer joined by an unbounded ``asyncio.Queue``
  grow with the number of items.

Medians and spreads over the rounds (the order of the variants rotating from
round to round) are printed with the ratios and their targets, all as
``_harness.py`` defines them (printed, never asserted):

* pipeline throughput >= 0.6 x the plain loop;
* pipeline throughput >= 10 x aiostream;
* memory peak at 10 x the items <= 2 x the peak at 1 x.

Run: ``python benchmarks/pipeline.py`` (about 40 s; ``--quick`` for a smoke
run, ``--loop asyncio`` for the default loop instead of uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from _harness import median, order, ratio, spread, verdict

from archangel.pipes.pipeline import Pipeline

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency
    uvloop = None

try:
    from aiostream import pipe, stream
except ImportError:
    pipe = stream = None


# -- the five trivial cogs, and the same work as 1:1 maps for aiostream -------------


def c1(d: dict[str, Any]) -> tuple[dict[str, Any]]:
    d["n"] = d["i"] + 1
    return (d,)


def c2(d: dict[str, Any]) -> tuple[dict[str, Any]] | None:
    return (d,) if d["n"] > 0 else None


def c3(d: dict[str, Any]) -> tuple[dict[str, Any]]:
    d["k"] = d["i"] & 7
    return (d,)


def c4(d: dict[str, Any]) -> tuple[dict[str, Any]]:
    d["tag"] = "x"
    return (d,)


def c5(d: dict[str, Any]) -> tuple[dict[str, Any]]:
    return (d,)


COGS = (c1, c2, c3, c4, c5)


def m1(d: dict[str, Any]) -> dict[str, Any]:
    d["n"] = d["i"] + 1
    return d


def m2(d: dict[str, Any]) -> dict[str, Any]:
    return d


def m3(d: dict[str, Any]) -> dict[str, Any]:
    d["k"] = d["i"] & 7
    return d


def m4(d: dict[str, Any]) -> dict[str, Any]:
    d["tag"] = "x"
    return d


def m5(d: dict[str, Any]) -> dict[str, Any]:
    return d


# -- the variants --------------------------------------------------------------------


def plain(items: Iterable[dict[str, Any]]) -> int:
    """The same five functions in a hand-written loop."""
    out = 0
    for d in items:
        for a in c1(d) or ():
            for b in c2(a) or ():
                for c in c3(b) or ():
                    for e in c4(c) or ():
                        for _ in c5(e) or ():
                            out += 1
    return out


async def archangel_pipeline(items: list[dict[str, Any]]) -> int:
    counters = await Pipeline(items, *COGS, name="bench").run()
    return counters["out"]


async def aiostream_pipe(items: list[dict[str, Any]]) -> int:
    xs = (
        stream.iterate(items)
        | pipe.map(m1)
        | pipe.map(m2)
        | pipe.map(m3)
        | pipe.map(m4)
        | pipe.map(m5)
    )
    out = 0
    async with xs.stream() as streamer:
        async for _ in streamer:
            out += 1
    return out


def timed(fn: Callable[[], Any], n: int) -> float:
    """Seconds per item of one call of ``fn`` over ``n`` items."""
    gc.collect()
    began = time.perf_counter()
    got = fn()
    elapsed = time.perf_counter() - began
    assert got == n, (got, n)
    return elapsed / n


# -- memory under back-pressure ----------------------------------------------------------


async def numbered(n: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        yield {"i": i, "payload": "x" * 64}


def spin(loops: int) -> None:
    for _ in range(loops):
        pass


async def slow_sink_peak(n: int, spin_loops: int, bounded: bool) -> tuple[int, float]:
    """tracemalloc's peak while ``n`` items go to a slow async sink; and seconds/item."""

    async def sink(item: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        spin(spin_loops)

    gc.collect()
    tracemalloc.start()
    began = time.perf_counter()
    if bounded:
        await Pipeline(numbered(n), *COGS, sink=sink, buffer=256).run()
    else:  # the same producer and consumer joined by an unbounded queue
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> None:
            async for item in numbered(n):
                for cog in COGS:
                    item = cog(item)[0]  # type: ignore[index]
                queue.put_nowait(item)
            queue.put_nowait(None)

        async def consume() -> None:
            while (item := await queue.get()) is not None:
                await sink(item)

        await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, elapsed / n


async def supply_cost(n: int) -> float:
    began = time.perf_counter()
    async for _ in numbered(n):
        pass
    return (time.perf_counter() - began) / n


async def sink_cost(n: int, spin_loops: int) -> float:
    began = time.perf_counter()
    for _ in range(n):
        await asyncio.sleep(0)
        spin(spin_loops)
    return (time.perf_counter() - began) / n


async def calibrate(supply: float) -> int:
    """The spin loops that make the sink about 100 times slower than the supply."""
    low, high = 0, 1
    while await sink_cost(300, high) < 110 * supply:
        low, high = high, high * 2
    while high - low > max(1, high // 20):
        middle = (low + high) // 2
        if await sink_cost(300, middle) < 110 * supply:
            low = middle
        else:
            high = middle
    return high


# -- reporting ---------------------------------------------------------------------------


def summary(name: str, per_item: list[float]) -> str:
    med = median(per_item)
    return (
        f"  {name:<20} {1 / med / 1e6:7.2f} M items/s   median {med * 1e9:8.1f} ns/item"
        f"   ({spread(per_item, '.1f', ' ns', 1e9)})"
    )


async def main(args: argparse.Namespace) -> None:
    n, aio_n = args.n, args.aio_n
    items = [{"i": i} for i in range(n)]
    aio_items = items[:aio_n]
    results: dict[str, list[float]] = {"plain loop": [], "archangel Pipeline": []}
    if stream is not None:
        results["aiostream pipe"] = []
    else:
        print("aiostream is not installed: skipping that comparison (pip install aiostream)")
    print(f"throughput: {n:,} dict items through 5 sync cogs, {args.rounds} rounds")
    for round_ in range(args.rounds):
        for name in order(list(results), round_):
            if name == "plain loop":
                results[name].append(timed(lambda: plain(items), n))
            elif name == "archangel Pipeline":
                began = time.perf_counter()
                got = await archangel_pipeline(items)
                assert got == n
                results[name].append((time.perf_counter() - began) / n)
            else:
                began = time.perf_counter()
                got = await aiostream_pipe(aio_items)
                assert got == aio_n
                results[name].append((time.perf_counter() - began) / aio_n)
    for name, per_item in results.items():
        print(summary(name, per_item))
    # Throughput ratios: the baseline's seconds per item over the pipeline's.
    pipeline = results["archangel Pipeline"]
    vs_plain = ratio(results["plain loop"], pipeline)
    print(f"  {verdict('throughput pipeline / plain loop', vs_plain, 0.6, at_least=True)}")
    if stream is not None:
        vs_aio = ratio(results["aiostream pipe"], pipeline)
        what = "throughput pipeline / aiostream"
        print(f"  {verdict(what, vs_aio, 10, at_least=True, fmt='.1f')}")

    small, large = args.mem_n, args.mem_n * 10
    supply = await supply_cost(small)
    spin_loops = await calibrate(supply)
    slowness = await sink_cost(1000, spin_loops) / supply
    print(
        f"memory: async supply -> 5 cogs -> async sink {slowness:.0f} x slower per item "
        "than the supply; tracemalloc peak"
    )
    peaks: dict[str, list[int]] = {}
    for bounded, label in ((True, "archangel Pipeline"), (False, "unbounded asyncio.Queue")):
        peaks[label] = []
        for count in (small, large):
            peak, _ = await slow_sink_peak(count, spin_loops, bounded)
            peaks[label].append(peak)
        print(
            f"  {label:<24} {small:>7,} items: {peaks[label][0] / 1024:8.0f} KiB   "
            f"{large:>7,} items: {peaks[label][1] / 1024:8.0f} KiB"
        )
    growth = peaks["archangel Pipeline"][1] / peaks["archangel Pipeline"][0]
    print(f"  {verdict('pipeline peak at 10 x the items / at 1 x', growth, 2, at_least=False)}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="items per round")
    parser.add_argument("--aio-n", type=int, default=100_000, help="items per aiostream round")
    parser.add_argument("--mem-n", type=int, default=2_000, help="items of the small memory run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.aio_n, args.mem_n, args.rounds = 100_000, 10_000, 500, 3
    return args


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    print(f"python {sys.version.split()[0]}, loop: {options.loop}")
    if options.loop == "uvloop" and uvloop is not None:
        uvloop.run(main(options))
    else:
        asyncio.run(main(options))
