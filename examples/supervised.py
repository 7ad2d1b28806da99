"""A supervisor keeping a flaky feed and its consumer running.

Run: ``python examples/supervised.py [--seconds N] [--failure-rate P]``

The feed fails now and then (with probability P at each item, 0.01 by
default); the supervisor restarts it (and, with ``rest_for_one``, the
consumer started after it) after a short backoff, and gives up if it has to
restart it more than 5 times in 2 seconds (try ``--failure-rate 0.5``).
Every second the example prints the supervisor's view; at the end it stops
the supervisor, which stops the consumer and then the feed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random

from archangel import ChildSpec, ProcessManager, ProcessState, Supervisor


async def main(seconds: float, failure_rate: float) -> None:
    manager = ProcessManager()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=100)
    totals = {"consumed": 0}

    async def feed() -> None:
        n = 0
        while True:
            await asyncio.sleep(0.01)
            if random.random() < failure_rate:
                raise ConnectionError(f"feed lost after {n} items")
            n += 1
            await queue.put(n)

    async def consume() -> None:
        while True:
            await queue.get()
            totals["consumed"] += 1

    supervisor = manager.spawn(
        Supervisor(
            ChildSpec(feed, name="feed", shutdown=1.0),
            ChildSpec(consume, name="consume", shutdown=1.0),
            strategy="rest_for_one",
            max_restarts=5,
            max_seconds=2.0,
            backoff=0.05,
            max_backoff=0.5,
            name="ingest",
        )
    )
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end and supervisor.state is ProcessState.RUNNING:
        await asyncio.sleep(min(1.0, max(0.0, end - loop.time())))
        children = ", ".join(f"{c.pid}:{c.name}" for c in supervisor.children)
        print(
            f"{supervisor.name}: restarts={supervisor.restarts} children=[{children}] "
            f"consumed={totals['consumed']}",
            flush=True,
        )
    await supervisor.stop()
    print(f"stopped: {supervisor!r}; consumed {totals['consumed']} items")
    for record in list(manager.history)[-3:]:
        print(f"  pid {record.pid} {record.name}: {record.exit_reason.value}")  # type: ignore[union-attr]
    await manager.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to run")
    parser.add_argument(
        "--failure-rate", type=float, default=0.01, help="chance the feed fails at each item"
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = parser.parse_args()
    asyncio.run(main(options.seconds, options.failure_rate))
