"""A pool of shard workers started from one template, run by an App.

Run: ``python examples/worker_pool.py [--seconds N] [--broken-shard K]``

The pool is a template supervisor (OTP's ``simple_one_for_one``): each
``start_child(shard)`` starts a worker for that shard. Shard 3 is disabled,
so its worker answers ``IGNORE`` and is not started. Halfway through, shard 4
is taken out of the pool with ``terminate_child``. Then the App stops, and
the pool stops the workers left, last started first.

With ``--broken-shard 2`` that shard's worker fails at once, every time: the
pool restarts it until its limit (3 restarts in 2 s), then gives up, which
stops the App with exit status 1 and a log line that says which supervisor
gave up and why.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from typing import Any

from archangel import IGNORE, App, ChildSpec, Process, State, Supervisor

DISABLED = {3}


def shard_worker(shard: int, *, broken: int | None) -> Any:
    """The template's factory: a worker for ``shard``, or IGNORE for a disabled one."""
    if shard in DISABLED:
        return IGNORE
    return work(shard, broken)


async def work(shard: int, broken: int | None) -> None:
    try:
        while True:
            await asyncio.sleep(0.05)
            if shard == broken:
                raise ConnectionError(f"shard {shard} lost its database")
    finally:
        print(f"shard {shard} worker ended", flush=True)


def main(seconds: float, broken: int | None) -> int:
    app = App("worker-pool", shutdown_timeout=5)
    pool = Supervisor(
        template=ChildSpec(
            functools.partial(shard_worker, broken=broken), name="shard", shutdown=1.0
        ),
        max_restarts=3,
        max_seconds=2.0,
        name="shards",
    )

    workers: dict[int, Process | None] = {}

    @app.bus.on(State.START)
    async def start_pool() -> None:
        app.manager.spawn(pool)
        for shard in (1, 2, 3, 4):
            workers[shard] = child = await pool.start_child(shard)
            print(f"shard {shard}: {f'pid {child.pid}' if child else 'ignored'}", flush=True)

    @app.bus.on(State.RUN)
    def run_for_a_while() -> None:
        async def timeline() -> None:
            await asyncio.sleep(seconds / 2)
            fourth = workers[4]
            assert fourth is not None
            await pool.terminate_child(fourth)
            print(f"shard 4 terminated: {fourth!r}", flush=True)
            await asyncio.sleep(seconds / 2)
            app.request_stop()

        app.manager.spawn(timeline(), name="timeline")

    status = app.run()
    print(f"{pool!r}, restarts={pool.restarts}; exit status {status}", flush=True)
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="how long to run")
    parser.add_argument("--broken-shard", type=int, default=None, help="a shard that fails")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = parser.parse_args()
    sys.exit(main(options.seconds, options.broken_shard))
