"""The console's ``tasks``, ``where TASK``, ``cancel TASK`` and ``signal`` (both loops)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import signal

from archangel import ProcessManager
from archangel.console import Console
from tests.console_helpers import RawClient
from tests.helpers import until


async def plain_wait(event: asyncio.Event) -> None:
    await event.wait()


async def stubborn(event: asyncio.Event) -> str:
    try:
        await event.wait()
    except asyncio.CancelledError:
        return "caught"
    return "done"


async def managed_sleep() -> None:
    await asyncio.sleep(3600)


def _ids(listing: dict[str, object]) -> dict[str, dict[str, object]]:
    tasks = listing["tasks"]
    assert isinstance(tasks, list)
    return {task["name"]: task for task in tasks}


async def test_tasks_lists_every_task_with_processes_marked() -> None:
    manager = ProcessManager()
    event = asyncio.Event()
    plain = asyncio.create_task(plain_wait(event), name="plain-waiter")
    process = manager.spawn(managed_sleep(), name="managed-sleeper")
    try:
        with Console(manager) as console:
            async with await RawClient.open(console.address) as client:
                text = await client.ask("tasks")
                row = next(line for line in text.splitlines() if "plain-waiter" in line)
                assert re.match(r"^t\d+\s+-\s+pending\s+plain-waiter\s+plain_wait\s", row)
                row = next(line for line in text.splitlines() if "managed-sleeper" in line)
                assert re.match(rf"^t\d+\s+{process.pid}\s+pending\s+managed-sleeper\s", row)
                # The test itself is a task on the app loop, not a process: listed too.
                this = asyncio.current_task()
                assert this is not None and f" {this.get_name()} " in text
                assert re.search(r"of \d+ tasks \(1 of them processes\)$", text)

                listing = json.loads(await client.ask("tasks --json"))
                by_name = _ids(listing)
                assert by_name["managed-sleeper"]["pid"] == process.pid
                assert by_name["managed-sleeper"]["kind"] == "task"
                assert by_name["plain-waiter"]["pid"] is None
                assert by_name["plain-waiter"]["coroutine"] == "plain_wait"
                # Where it awaits: the line of its own code, not asyncio's.
                where = by_name["plain-waiter"]["where"]
                assert isinstance(where, str) and re.search(r"test_console_tasks\.py:\d+$", where)
                assert listing["total"] == listing["count"] == len(by_name)

                filtered = await client.ask("tasks -n plain-*")
                assert "plain-waiter" in filtered and "managed-sleeper" not in filtered
                assert await client.ask("tasks -n nothing-like-it") == "no tasks match"
                assert (await client.ask("tasks extra")).startswith("error: tasks takes no")
                # The ids stay the same from one listing to the next.
                again = _ids(json.loads(await client.ask("tasks --json")))
                assert again["plain-waiter"]["id"] == by_name["plain-waiter"]["id"]
    finally:
        event.set()
        await plain
        process.kill()


async def test_where_and_cancel_take_an_id_a_pid_or_a_name() -> None:
    manager = ProcessManager()
    event = asyncio.Event()
    plain = asyncio.create_task(plain_wait(event), name="plain-waiter")
    caught = asyncio.create_task(stubborn(event), name="stubborn")
    twins = [asyncio.create_task(plain_wait(event), name="twin") for _ in range(2)]
    process = manager.spawn(managed_sleep(), name="managed-sleeper")
    try:
        with Console(manager) as console:
            async with await RawClient.open(console.address) as client:
                by_name = _ids(json.loads(await client.ask("tasks --json")))
                plain_id = by_name["plain-waiter"]["id"]

                where = await client.ask(f"where {plain_id}")
                assert where.startswith(f"task {plain_id} (plain-waiter), innermost await last:")
                assert "await event.wait()" in where and where.endswith("awaiting a future")
                assert (await client.ask("where plain-waiter")) == where
                where = await client.ask(f"where {process.pid}")
                assert where.startswith(f"pid {process.pid} (managed-sleeper), task t")
                assert "await asyncio.sleep(3600)" in where
                ambiguous = await client.ask("where twin")
                assert ambiguous.startswith("error: 2 tasks are named twin (t")
                nobody = await client.ask("where nobody")
                assert nobody == "error: no task named nobody: see 'tasks'"
                assert "no task t999999" in await client.ask("where t999999")

                reply = await client.ask(f"cancel {plain_id}")
                assert reply == f"task {plain_id} (plain-waiter): cancelled"
                assert plain.cancelled()
                assert "it has finished" in await client.ask(f"where {plain_id}")
                reply = await client.ask("cancel stubborn")
                assert reply.endswith(
                    "(stubborn): finished (it caught the cancellation and returned)"
                )
                assert caught.result() == "caught"
                reply = await client.ask(f"cancel {process.pid}")
                assert reply.startswith(f"pid {process.pid} (managed-sleeper), task t")
                assert reply.endswith(": cancelled")
                assert await client.ask("") == ""  # Enter never repeats a cancel
    finally:
        event.set()
        await asyncio.gather(plain, caught, *twins, return_exceptions=True)
        process.kill()


async def test_tasks_pages_50_000_tasks() -> None:
    event = asyncio.Event()
    tasks = [asyncio.create_task(plain_wait(event), name=f"many-{n}") for n in range(50_000)]
    await asyncio.sleep(0)
    try:
        with Console(ProcessManager()) as console:
            async with await RawClient.open(console.address) as client:
                text = await client.ask("tasks -n many-", timeout=60)
                assert "showing 1-50 of 50000 tasks (0 of them processes) (Enter for more)" in text
                nxt = await client.ask("", timeout=60)
                assert "showing 51-100 of 50000 tasks" in nxt
                page = json.loads(await client.ask("tasks -n many- --json -l 3 -o 49997"))
                assert page["count"] == 3 and page["next_offset"] is None
    finally:
        event.set()
        await asyncio.gather(*tasks)


# -- signal ---------------------------------------------------------------------------


async def test_signal_sends_to_this_process_in_any_spelling() -> None:
    loop = asyncio.get_running_loop()
    got: list[str] = []
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # nothing handles USR1 here
    try:
        with Console(ProcessManager()) as console:
            async with await RawClient.open(console.address) as client:
                pid = os.getpid()
                assert await client.ask("signal SIGUSR2") == f"sent SIGUSR2 to pid {pid}"
                await until(lambda: got == ["usr2"])
                assert await client.ask("signal usr2") == f"sent SIGUSR2 to pid {pid}"
                await until(lambda: got == ["usr2", "usr2"])
                assert await client.ask("signal check") == f"running: pid {pid}"
                refused = await client.ask("signal USR1")
                assert refused == (
                    f"error: SIGUSR1 has no handler in pid {pid}: it would end the process "
                    "at once; 'stop' stops gracefully, or add --force"
                )
                bad = await client.ask("signal KILL")
                assert bad == (
                    "error: unknown signal KILL: "
                    "use INT, TERM, QUIT, HUP, USR1, USR2, ALRM or check"
                )
                assert (await client.ask("signal")).startswith("error: usage: signal NAME")
                assert await client.ask("") == ""  # Enter never sends it again
                assert got == ["usr2", "usr2"]
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)


async def test_task_ids_are_kept_while_a_task_lives_and_never_given_again() -> None:
    """asyncio's own weak references number the tasks; one gone is forgotten, its id unused."""
    from archangel.console.tasks import TaskIds
    from archangel.kernel.loop_tasks import live_refs

    event = asyncio.Event()
    tasks = [asyncio.ensure_future(plain_wait(event)) for _ in range(3)]
    await asyncio.sleep(0)
    ids = TaskIds()
    mine = {ref() for ref in live_refs(asyncio.get_running_loop())} & set(tasks)
    assert mine == set(tasks)
    numbers = {ids.number_ref(ref) for ref in live_refs(asyncio.get_running_loop())}
    first = [ids.number(task) for task in tasks]
    assert set(first) <= numbers and len(set(first)) == 3
    assert [ids.get(n) for n in first] == tasks
    event.set()
    await asyncio.wait(tasks)
    del tasks, mine
    gc.collect()  # a finished task may sit in a reference cycle a moment
    ids.prune(0)  # under the threshold: nothing forgotten yet, though all are gone
    assert all(ids.get(n) is None for n in first)
    later = asyncio.ensure_future(asyncio.sleep(0))
    assert ids.number(later) > max(numbers)  # a new task gets a new id, never an old one
    assert ids.known(later) == ids.number(later)
    await later


async def test_task_ids_forget_the_tasks_that_are_gone_and_keep_the_live_ones() -> None:
    """Past the threshold ``prune`` drops every entry of a gone task, and nothing else."""
    from archangel.console.tasks import TaskIds

    event = asyncio.Event()
    keep = asyncio.ensure_future(plain_wait(event))
    done = [asyncio.ensure_future(asyncio.sleep(0)) for _ in range(1500)]
    ids = TaskIds()
    kept = ids.number(keep)
    numbers = [ids.number(task) for task in done]
    await asyncio.wait(done)
    del done
    gc.collect()
    ids.prune(1)
    assert sum(map(len, ids._refs.values())) == sum(map(len, ids._numbers.values())) == 1
    assert len(ids._refs) == len(ids._numbers) == 1  # the emptied blocks are gone too
    assert ids.get(kept) is keep and ids.known(keep) == kept
    assert all(ids.get(n) is None for n in numbers)
    again = asyncio.ensure_future(asyncio.sleep(0))  # may take a freed task's address
    assert ids.known(again) is None and ids.number(again) > max(numbers)
    event.set()
    await asyncio.gather(keep, again)
