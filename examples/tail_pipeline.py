"""Tail a log file, parse it, keep the warnings and errors, count them per service.

Run::

    python examples/tail_pipeline.py /var/log/app.log      # follow a real file
    python examples/tail_pipeline.py                       # make up a log of its own
    python examples/tail_pipeline.py --seconds 10          # stop by itself after 10 s
    python examples/tail_pipeline.py app.log --from-start  # count what is there already

Lines look like ``2026-05-01T12:00:00 ERROR billing payment refused``
(timestamp, level, service, message); other lines are skipped. Every few
seconds (``--every``) a summary is printed; Ctrl-C (or ``--seconds``) stops
everything gracefully: the tail stops, the lines in flight are counted, the
counting cog prints its final table from ``finish`` and the pipeline's
counters are printed last.

Without a path, a writer process of its own appends made-up lines to a
temporary file (and rotates it once, to show that the tail follows).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import random
import signal
import tempfile
from datetime import datetime
from typing import Any

from archangel import ProcessManager
from archangel.pipes.cogs import Cog, itemgetter, keep
from archangel.pipes.pipeline import Pipeline
from archangel.pipes.supplies import every, tail

LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")
SERVICES = ("billing", "search", "auth", "mailer")


def parse(line: str) -> tuple[dict[str, str]] | None:
    """``"<time> <LEVEL> <service> <message>"`` -> a dict; anything else is swallowed."""
    parts = line.split(" ", 3)
    if len(parts) < 4 or parts[1] not in LEVELS:
        return None
    when, level, service, message = parts
    return ({"time": when, "level": level, "service": service, "message": message},)


def important(event: dict[str, str]) -> bool:
    return event["level"] in ("WARNING", "ERROR")


class CountPerKey(Cog):
    """Counts items per key; passes them on; prints the final table at finish."""

    def __init__(self, key_getter: Any = None) -> None:
        self.key_getter = key_getter or itemgetter("service")
        self.counts: collections.Counter[Any] = collections.Counter()

    def __call__(self, item: Any) -> tuple[Any]:
        self.counts[self.key_getter(item)] += 1
        return (item,)

    def table(self) -> str:
        return "  ".join(f"{key}={n}" for key, n in sorted(self.counts.items())) or "(nothing yet)"

    def finish(self) -> None:
        print(f"final counts: {self.table()}")


async def report(counter: CountPerKey, pipeline: Pipeline, seconds: float) -> None:
    async for _ in every(seconds):
        c = pipeline.counters
        print(
            f"[{datetime.now():%H:%M:%S}] {counter.table()}   "
            f"(lines {c['in']}, kept {c['out']}, skipped {c['swallowed']}, failed {c['failed']})"
        )


def append_made_up_lines(path: str) -> None:
    with open(path, "a") as log:
        for _ in range(random.randint(1, 8)):
            level, service = random.choice(LEVELS), random.choice(SERVICES)
            log.write(f"{datetime.now().isoformat(timespec='seconds')} {level} {service} hi\n")
        if random.random() < 0.05:
            log.write("a line that is not in the format\n")


async def make_up_lines(path: str) -> None:
    """Append a few made-up lines every 50 ms; rotate the file once after 1.5 s."""
    loop = asyncio.get_running_loop()
    rotate_at = loop.time() + 1.5
    while True:
        append_made_up_lines(path)
        if rotate_at and loop.time() >= rotate_at:
            # The tail follows the new file and reads the old one to its end.
            os.replace(path, path + ".1")
            rotate_at = 0
        await asyncio.sleep(0.05)


async def main(
    path: str | None, seconds: float | None, every_seconds: float, from_start: bool
) -> None:
    manager = ProcessManager()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = os.path.join(tmp, "made-up.log")
            manager.spawn(make_up_lines(path), name="make-up-lines")
            print(f"following {path} (made-up lines)")
        else:
            print(f"following {path}")
        counter = CountPerKey()
        supply = tail(path, from_start)
        pipeline = Pipeline(supply, parse, keep(important), counter, name="log-counter")
        manager.spawn(pipeline)
        manager.spawn(report(counter, pipeline, every_seconds), name="report")
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass
        print("stopping...")
        await manager.shutdown(timeout=5)
        print(f"tail: {supply.rotations} rotations, {supply.truncations} truncations")
        print(f"pipeline counters: {dict(pipeline.counters)}")
        for cog in pipeline.cog_counters:
            print(f"  {cog.name:<15} {dict(cog)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", help="the log file to follow (default: made up)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between summaries")
    parser.add_argument("--from-start", action="store_true", help="read the file from its start")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(options.path, options.seconds, options.every, options.from_start))
