"""Statistics: count your own events, read their rates in the log and the runlog.

A pipeline counts the words it splits (``pipeline.inc``), the App logs a
statistics line every half of ``--seconds`` (``stats_interval``), and at the
stop the runlog's statistics give the count and the speed.

Run: ``python examples/statistics.py [--seconds 2]``; SIGUSR1 writes the
runlog, SIGUSR2 the state (with ``"app": {"source": ...}`` from the
``state`` subscriber below).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator

from archangel import App, Cog, Pipeline, State


class Words(Cog):
    """Splits a line into words, counting them on its pipeline."""

    def __call__(self, line: str) -> list[str]:
        words = line.split()
        self.pipeline.inc("words", len(words))
        return words


async def lines() -> AsyncIterator[str]:
    n = 0
    while True:
        n += 1
        yield f"line {n} has five words"
        await asyncio.sleep(0.001)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = App("wordcount", stats_interval=args.seconds / 2)

    @app.bus.on(State.START)
    def start() -> None:
        app.manager.spawn(Pipeline(lines(), Words(), name="words"))
        asyncio.get_running_loop().call_later(args.seconds, app.request_stop)

    @app.bus.on("state")  # what the SIGUSR2 state dump holds under "app"
    def source() -> dict[str, str]:
        return {"source": "generated lines"}

    @app.bus.on(State.STOP, priority=5)  # before the App stops its timers (10)
    def report() -> None:
        app.inc("reports")  # the App's own count, under "user"
        statistics = app.runlog()["statistics"]
        words = statistics["pipelines"]["words"]["user"]["words"]
        print(f"words: {words['cnt']} counted, {words['spd']:.0f}/s")
        print(f"reports: {statistics['user']['reports']['cnt']}")

    return app.run(loop="asyncio")


if __name__ == "__main__":
    sys.exit(main())
