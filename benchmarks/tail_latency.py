"""Tail latency: from a line appended to a file to the first cog seeing it.

A writer *process* appends ``--lines`` lines (each holding the
``CLOCK_MONOTONIC`` time it was written, which both processes share) at one
line every ``--pace`` seconds; the reader measures, for each line, the time
from the write to

* the first cog of a ``Pipeline(tail(path), measure)`` using the inotify watcher;
* the same with the polling watcher (``--poll-interval``, default 0.25 s, the
  watcher's default);
* ``watchfiles.awatch`` on the same appends, reading the new bytes on each
  change: with its defaults, and tuned for latency (``step=1, debounce=1``);
  skipped with a message when watchfiles is not installed.

Variants run interleaved, ``--rounds`` times each (the order rotating). The
samples here are the lines, not the rounds: the median, p99 and max over
every line of every round are printed, the spread of the per-round medians
and the ratio of each variant's median to the inotify tail's (a baseline
measured in the same run), all as ``_harness.py`` defines them, with the
targets (printed, never asserted): with inotify, median <= 2 ms and p99 <=
10 ms.

Run: ``python benchmarks/tail_latency.py`` (about 40 s; ``--quick`` for a
smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _harness import median, order, spread, verdict

from archangel.pipes.pipeline import Pipeline
from archangel.pipes.supplies import tail
from archangel.pipes.watch import Watcher, inotify_available

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency
    uvloop = None

try:
    from watchfiles import awatch
except ImportError:
    awatch = None

WRITER = """
import os, sys, time
path, lines, pace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for _ in range(lines):
    os.write(fd, b"%d\\n" % time.monotonic_ns())
    time.sleep(pace)
os.close(fd)
"""


async def write_lines(path: Path, lines: int, pace: float) -> None:
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), str(lines), str(pace)
    )
    await writer.wait()


async def with_archangel(path: Path, args: argparse.Namespace, polling: bool) -> list[float]:
    latencies: list[float] = []
    all_seen = asyncio.Event()

    def measure(line: str) -> None:
        latencies.append((time.monotonic_ns() - int(line)) / 1e6)
        if len(latencies) == args.lines:
            all_seen.set()

    watcher = Watcher(polling=polling, interval=args.poll_interval)
    assert watcher.inotify is not polling
    pipeline = Pipeline(tail(path, watcher=watcher), measure, name="latency")
    pipeline.start()
    while not pipeline._reading:  # the tail is open and waiting for appends
        await asyncio.sleep(0.001)
    await write_lines(path, args.lines, args.pace)
    async with asyncio.timeout(10 + 2 * args.poll_interval):
        await all_seen.wait()
    await pipeline.stop()
    watcher.close()
    return latencies


async def with_watchfiles(path: Path, args: argparse.Namespace, tuned: bool) -> list[float]:
    latencies: list[float] = []
    stop = asyncio.Event()
    options = {"step": 1, "debounce": 1} if tuned else {}

    async def follow() -> None:
        position, partial = 0, b""
        async for _changes in awatch(path, stop_event=stop, **options):
            with path.open("rb") as f:
                f.seek(position)
                data = f.read()
            now = time.monotonic_ns()
            position += len(data)
            *complete, partial = (partial + data).split(b"\n")
            latencies.extend((now - int(line)) / 1e6 for line in complete)
            if len(latencies) >= args.lines:
                return

    follower = asyncio.ensure_future(follow())
    await asyncio.sleep(0.2)  # awatch has started watching
    await write_lines(path, args.lines, args.pace)
    try:
        async with asyncio.timeout(10):
            await follower
    finally:
        stop.set()
    return latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def main(args: argparse.Namespace) -> None:
    variants: dict[str, Callable[[Path], Awaitable[list[float]]]] = {}
    if inotify_available():
        variants["archangel tail, inotify"] = lambda p: with_archangel(p, args, polling=False)
    else:
        print("no inotify on this system: skipping the inotify watcher")
    variants[f"archangel tail, polling {args.poll_interval} s"] = lambda p: with_archangel(
        p, args, polling=True
    )
    if awatch is not None:
        variants["watchfiles.awatch, defaults"] = lambda p: with_watchfiles(p, args, tuned=False)
        variants["watchfiles.awatch, step=1 debounce=1"] = lambda p: with_watchfiles(
            p, args, tuned=True
        )
    else:
        print("watchfiles is not installed: skipping that comparison (pip install watchfiles)")
    print(
        f"{args.lines} lines appended by another process, one every {args.pace * 1000:.0f} ms, "
        f"{args.rounds} rounds"
    )
    samples: dict[str, list[float]] = {name: [] for name in variants}
    medians: dict[str, list[float]] = {name: [] for name in variants}  # one per round
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name in order(list(variants), round_):
                path = Path(tmp) / f"{round_}-{len(samples[name])}-{abs(hash(name))}.log"
                path.touch()
                latencies = await variants[name](path)
                samples[name].extend(latencies)
                medians[name].append(median(latencies))
                os.unlink(path)
    inotify = samples.get("archangel tail, inotify")
    for name, values in samples.items():
        versus = f"   {median(values) / median(inotify):7.1f}x inotify" if inotify else ""
        print(
            f"  {name:<40} median {median(values):8.3f} ms   "
            f"p99 {p99(values):8.3f} ms   max {max(values):8.3f} ms   ({len(values)} lines)"
            f"{versus}\n  {'':40} per-round medians {spread(medians[name], '.3f', ' ms')}"
        )
    if inotify:
        print(f"  {verdict('inotify median', median(inotify), 2, at_least=False, unit=' ms')}")
        print(f"  {verdict('inotify p99', p99(inotify), 10, at_least=False, unit=' ms')}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=500, help="lines per round and variant")
    parser.add_argument("--pace", type=float, default=0.005, help="seconds between two lines")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--quick", action="store_true", help="100 lines, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.lines, args.rounds = 100, 1
    return args


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    print(f"python {sys.version.split()[0]}, loop: {options.loop}")
    if options.loop == "uvloop" and uvloop is not None:
        uvloop.run(main(options))
    else:
        asyncio.run(main(options))
