"""kernel/holders: a task held until done; a wait parked in several lists, left in none."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from archangel.kernel.holders import hold, park, wake_all


async def test_a_held_task_survives_collection_and_leaves_when_done() -> None:
    tasks: set[Any] = set()
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    task = hold(tasks, asyncio.ensure_future(work()))
    assert tasks == {task}
    del task
    gc.collect()
    [task] = tasks
    gate.set()
    assert await task == "done"
    await asyncio.sleep(0)
    assert tasks == set()


async def test_a_park_wakes_on_any_list_and_leaves_its_future_in_none() -> None:
    first: list[asyncio.Future[None]] = []
    second: list[asyncio.Future[None]] = []
    waiting = asyncio.ensure_future(park((first, second)))
    await asyncio.sleep(0)
    assert len(first) == len(second) == 1
    wake_all(second)
    await asyncio.wait_for(waiting, 5)
    assert first == [] and second == []


async def test_a_park_that_times_out_again_and_again_piles_nothing_up() -> None:
    never: list[asyncio.Future[None]] = []
    for _ in range(3):
        try:
            await asyncio.wait_for(park((never,)), 0.001)
        except TimeoutError:
            pass
    assert never == []
    wake_all(never)  # nobody there: nothing to do
