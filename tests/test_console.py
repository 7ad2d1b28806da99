"""Console end to end: real sockets, the test's loop as the app's loop (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from archangel import App, ExitReason, Process, ProcessManager, ProcessState, State, TaskProcess
from archangel.console import Console
from archangel.console.fairness import _GIL_SLICE
from tests.console_helpers import PROMPT, BlockingClient, Light, RawClient
from tests.helpers import serve, until


class Echo(Process, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def sleeper() -> None:
    await asyncio.sleep(3600)


# -- listing ------------------------------------------------------------------------


async def test_ps_lists_filters_sorts_and_pages() -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(Echo))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await until(lambda: len(manager) == 1)
    for _ in range(60):
        manager.register(Light())
    task = manager.spawn(sleeper(), name="the-sleeper")
    try:
        with Console(manager) as console:
            async with await RawClient.open(console.address) as client:
                everything = await client.ask("ps")
                assert "showing 1-50 of 62 (Enter for more)" in everything
                assert re.search(r"^\s*1\s+conn\s+running\s.*peer=127\.0\.0\.1:", everything, re.M)
                nxt = await client.ask("")  # Enter: the next page
                assert "showing 51-62 of 62" in nxt
                assert "the-sleeper" in nxt
                assert await client.ask("") == ""  # nothing more to show: Enter does nothing

                conns = await client.ask("ps conn")
                assert "showing 1-1 of 1" in conns
                tasks = await client.ask("ps --kind task,conn --name 'the-*'")
                assert "the-sleeper" in tasks and "showing 1-1 of 1" in tasks
                running = await client.ask("ps -s running")
                assert "showing 1-2 of 2" in running  # Light processes stay NEW
                newest = await client.ask("ps --sort -pid -l 1")
                assert "the-sleeper" in newest and "showing 1-1 of 62" in newest
                page = await client.ask("ps -l 5 -o 10")
                assert "showing 11-15 of 62" in page
                assert "no processes match" in await client.ask("ps -n nothing-like-this")

                # Bad input: one line of error, and the session goes on.
                assert (await client.ask("ps --bogus")).startswith("error: unknown option")
                assert "error:" in await client.ask("ps --limit many")
                assert "error:" in await client.ask("ps --state sleeping")
                assert "error:" in await client.ask("ps --sort colour")
                assert "error:" in await client.ask("ps --limit 0")
                assert "error: cannot parse" in await client.ask("ps 'unclosed")
                assert "unknown command frobnicate" in await client.ask("frobnicate 1 2")
                assert "showing" in await client.ask("ps")
    finally:
        writer.close()
        task.kill()
        server.close()
        await server.wait_closed()


async def test_ps_json_parses() -> None:
    manager = ProcessManager()
    for _ in range(3):
        manager.register(Light())
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            data = json.loads(await client.ask("ps --json --limit 2"))
            assert data["total"] == 3
            assert data["limit"] == 2
            assert [p["pid"] for p in data["processes"]] == [1, 2]
            assert data["processes"][0]["kind"] == "light"
            assert data["processes"][0]["state"] == "new"
            info = json.loads(await client.ask("info 3 --json"))
            assert info["pid"] == 3
            assert info["cls"].endswith("Light")
            stats = json.loads(await client.ask("stats --json"))
            assert stats["counters"]["running"] == 3
            assert stats["console"]["sessions"] == 1
            lag = json.loads(await client.ask("lag --json"))
            assert lag["probe_interval"] == 0.5


async def test_info_where_and_history() -> None:
    manager = ProcessManager()
    light = manager.register(Light())
    task = manager.spawn(sleeper(), name="napper")
    gone = manager.spawn(sleeper(), name="gone")
    await asyncio.sleep(0)
    gone.kill()
    await gone.wait()
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            info = await client.ask(f"info {task.pid}")
            assert re.search(r"^name\s+napper$", info, re.M)
            assert re.search(r"^state\s+running$", info, re.M)
            exited = await client.ask(f"info {gone.pid}")
            assert re.search(r"^exit\s+killed$", exited, re.M)
            assert "no process 999" in await client.ask("info 999")
            assert "not a pid" in await client.ask("info x")

            where = await client.ask(f"where {task.pid}")
            assert "in sleeper" in where and "await asyncio.sleep(3600)" in where
            assert "awaiting a future" in where
            assert "not a task" in await client.ask(f"where {light.pid}")
            assert f"pid {gone.pid} has already exited" in await client.ask(f"where {gone.pid}")

            history = await client.ask("history")
            assert re.search(rf"^\s*{gone.pid}\s+task\s+killed\s", history, re.M)
            assert "last 1 of 1 completed" in history
            data = json.loads(await client.ask("history 5 --json --kind task"))
            assert [p["pid"] for p in data["processes"]] == [gone.pid]
            assert "error:" in await client.ask("history lots")
    task.kill()


async def fails() -> None:
    raise ValueError("bad header")


async def waits_for_a_task() -> None:
    await asyncio.ensure_future(sleeper())


#: What a Python repr looks like in a reply: <Thing ...>, 'quoted', ValueError('...'), \x01.
REPRISH = re.compile(r"<\w[^>]*>|'[^' ]+'|\w\(['\"]|\\x[0-9a-f]{2}")


async def test_answers_are_in_operator_words_never_python_reprs() -> None:
    manager = ProcessManager()
    manager.register(Light())
    failed = manager.spawn(fails(), name="parser")
    waiter = manager.spawn(waits_for_a_task(), name="waiter")
    await asyncio.sleep(0.01)
    assert failed.state is ProcessState.EXITED
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            assert await client.ask("kill 99999999") == "error: no process with pid 99999999"
            assert (
                await client.ask(f"kill {failed.pid}")
                == f"error: pid {failed.pid} has already exited"
            )
            assert await client.ask("where 99999999") == "error: no process with pid 99999999"
            assert re.search(
                r"^error\s+ValueError: bad header$", await client.ask(f"info {failed.pid}"), re.M
            )
            where = await client.ask(f"where {waiter.pid}")
            assert f"pid {waiter.pid} (waiter), task " in where
            assert where.endswith("awaiting a future")
            assert await client.ask("killall nope") == "no running processes of kind nope"
            assert await client.ask("killall light") == "killed 1 process of kind light: 1 exited"
            assert await client.ask("frob\u200bnicate") == (
                "error: unknown command frob?nicate: type help for the list"
            )
            replies = [
                await client.ask(line)
                for line in (
                    "history",
                    "ps --bogus",
                    "ps --sort weird",
                    "ps -s weird",
                    "ps a b",
                    "ps --limit x",
                    "info x",
                    "history lots",
                    "help nope",
                    "stats",
                )
            ]
            for reply in replies:
                assert not REPRISH.search(reply), reply
            assert "1 session open" in replies[-1]
    waiter.kill()


# -- actions ------------------------------------------------------------------------------


async def test_kill_runs_the_at_exit_hooks_before_answering() -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(Echo))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await until(lambda: len(manager) == 1)
    conn = manager[1]
    task = manager.spawn(sleeper(), name="victim")
    ran: list[tuple[str, int]] = []
    conn.at_exit(lambda: ran.append(("conn", threading.get_ident())))
    task.at_exit(lambda: ran.append(("task", threading.get_ident())))
    try:
        with Console(manager) as console:
            async with await RawClient.open(console.address) as client:
                reply = await client.ask(f"kill {conn.pid} {task.pid} 77")
                assert sorted(name for name, _ in ran) == ["conn", "task"]  # already ran
                assert all(ident == threading.get_ident() for _, ident in ran)  # app thread
                assert f"pid {conn.pid}: killed (Echo, exit: killed)" in reply
                assert f"pid {task.pid}: killed (victim, exit: killed)" in reply
                assert "no process with pid 77" in reply.splitlines()
                assert await reader.read() == b""  # the peer saw its connection end
                assert conn.exit_reason is ExitReason.KILLED
                assert len(manager) == 0
                assert await client.ask("") == ""  # Enter never repeats a kill
                assert "usage: kill" in await client.ask("kill")
                assert "not a pid" in await client.ask("kill -3")
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def test_killall_kills_one_kind() -> None:
    manager = ProcessManager()
    lights = [manager.register(Light()) for _ in range(5)]
    task = manager.spawn(sleeper())
    server, port = await serve(manager.register(Echo))
    peers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await until(lambda: len(manager) == 9)
    try:
        with Console(manager) as console:
            async with await RawClient.open(console.address) as client:
                reply = await client.ask("killall light")
                assert reply == "killed 5 processes of kind light: 5 exited"
                assert all(p.state is ProcessState.EXITED for p in lights)
                assert task.state is ProcessState.RUNNING
                # Connections exit once their transport has closed: the reply waits for it.
                reply = await client.ask("killall conn")
                assert reply == "killed 3 processes of kind conn: 3 exited"
                for reader, _ in peers:
                    assert await reader.read() == b""
                assert "no running processes of kind light" in await client.ask("killall light")
                assert "usage: killall KIND" in await client.ask("killall")
                assert len(manager) == 1
    finally:
        task.kill()
        for _, writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_app_commands_against_a_real_app(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = App(
        "console-app",
        state_file=tmp_path / "state.json",
        runlog_file=logs / "runlog.json",
        console={"action_timeout": 5.0},
    )
    reloads: list[int] = []

    @app.bus.on("reload")
    def on_reload() -> None:
        reloads.append(threading.get_ident())

    task = asyncio.ensure_future(app.main())
    await app.bus.wait(State.RUN, State.EXITED)
    assert app.console is not None
    async with await RawClient.open(app.console.address) as client:
        bus = await client.ask("bus")
        assert bus.startswith("state: RUN\n")
        assert re.search(r"^START\s+1\s+App\._start$", bus, re.M)
        assert re.search(r"^STOP\s+2\s+App\._stop_accepting, App\._drain$", bus, re.M)
        assert re.search(r"^reload\s+1\s+.*on_reload$", bus, re.M)

        assert await client.ask("reload") == "reload done"
        assert reloads == [threading.get_ident()]  # on the app's loop thread

        assert await client.ask("dump state") == f"state written to {tmp_path / 'state.json'}"
        state = json.loads((tmp_path / "state.json").read_text())
        assert state["name"] == "console-app"
        assert await client.ask("dump runlog") == f"runlog written to {logs / 'runlog.json'}"
        assert json.loads((logs / "runlog.json").read_text())
        shutil.rmtree(logs)
        failed = await client.ask("dump runlog")
        assert failed.startswith("dump runlog failed: FileNotFoundError")
        assert "usage: dump state|runlog" in await client.ask("dump everything")

        assert await client.ask("stop") == "stop requested: the app is shutting down"
        assert await client.read_all() == ""  # the app stopped and closed the console
    assert await task == 0
    assert app.bus.state is State.EXITED


async def test_app_commands_on_a_bare_manager() -> None:
    with Console(ProcessManager()) as console:
        async with await RawClient.open(console.address) as client:
            for line in ("stop", "reload", "dump state", "bus"):
                reply = await client.ask(line)
                assert reply.endswith("not available: console target is a bare ProcessManager")
            assert "no pipelines running" in await client.ask("pipes")


class FakePipeline(TaskProcess):
    kind = "pipeline"

    def __init__(self) -> None:
        super().__init__(sleeper(), name="lines")
        self.counters = {"in": 10, "out": 8, "swallowed": 1, "failed": 1}
        self.cog_counters = [{"in": 10, "out": 8, "seconds": 0.5}]


async def test_pipes_shows_counters() -> None:
    manager = ProcessManager()
    pipe = manager.spawn(FakePipeline())
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            text = await client.ask("pipes")
            assert f"pid {pipe.pid}  lines  [running" in text
            assert "in=10 out=8 swallowed=1 failed=1" in text
            assert "cog 1: in=10 out=8 seconds=0.5" in text
            data = json.loads(await client.ask("pipes --json"))
            assert data["pipelines"][0]["counters"]["out"] == 8
    pipe.kill()


async def test_repl_is_off_by_default_and_runs_on_the_app_thread_when_on() -> None:
    manager = ProcessManager()
    manager.register(Light())
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            assert "unknown command py" in await client.ask("py 1 + 1")
    with Console(manager, repl=True) as console:
        async with await RawClient.open(console.address, banner=False) as client:
            assert "WARNING: 'py' is enabled" in await client.read_until(PROMPT)
            assert await client.ask("py len(manager)") == "1"
            ident = await client.ask("py __import__('threading').get_ident()")
            assert int(ident) == threading.get_ident()
            assert await client.ask('py "a  b".split()') == "['a', 'b']"
            assert "py failed: ZeroDivisionError" in await client.ask("py 1 / 0")
            assert "syntax error" in await client.ask("py 1 +")
            assert await client.ask("py asyncio.sleep(0, 'awaited')") == "'awaited'"


# -- the app loop blocked -------------------------------------------------------------------


async def test_answers_while_the_app_loop_is_blocked() -> None:
    manager = ProcessManager()
    victim = manager.spawn(sleeper(), name="victim")
    replies: dict[str, str] = {}
    errors: list[BaseException] = []
    with Console(manager, action_timeout=0.2) as console:

        def talk() -> None:
            try:
                with BlockingClient(console.address) as client:
                    replies["ps"] = client.ask("ps")
                    deadline = time.monotonic() + 5
                    while "BLOCKED" not in replies.get("lag", "") and time.monotonic() < deadline:
                        replies["lag"] = client.ask("lag")
                    replies["stack"] = client.ask("stack")
                    replies["kill"] = client.ask(f"kill {victim.pid}")
            except BaseException as exc:
                errors.append(exc)

        def block_the_loop() -> None:
            talker = threading.Thread(target=talk)
            talker.start()
            while talker.is_alive():
                time.sleep(0.005)  # the line 'stack' must show
            talker.join()

        loop = asyncio.get_running_loop()
        unblocked = loop.create_future()
        loop.call_soon(block_the_loop)
        loop.call_soon(unblocked.set_result, None)
        await unblocked
        assert not errors, errors
        assert "showing 1-1 of 1" in replies["ps"] and "victim" in replies["ps"]
        assert "BLOCKED" in replies["stack"]
        assert "in block_the_loop" in replies["stack"]
        assert "time.sleep(0.005)" in replies["stack"].splitlines()[-1]
        assert "the app loop is BLOCKED" in replies["lag"]
        assert "the app loop is blocked" in replies["kill"]
        assert "queued" in replies["kill"]
        async with asyncio.timeout(5):  # the queued kill runs once the loop is free
            await victim.wait()
        assert victim.exit_reason is ExitReason.KILLED
        async with await RawClient.open(console.address) as client:
            await until(lambda: console._apploop is not None and not console._apploop.blocked_for)
            assert "answering" in await client.ask("stack")
            lag = await client.ask("lag")
            assert "BLOCKED" not in lag and re.search(r"max \d+(\.\d+)? (ms|s)", lag)


async def test_started_from_another_thread_with_loop_argument() -> None:
    manager = ProcessManager()
    console = Console(manager)
    await asyncio.to_thread(console.start, asyncio.get_running_loop())
    try:
        async with await RawClient.open(console.address) as client:
            assert console._apploop is not None
            await until(lambda: console._apploop.thread_id is not None)  # learnt from the probe
            assert "app loop thread" in await client.ask("stack")
            assert await client.ask("stop") != ""  # a bare manager: answered, not hung
    finally:
        await asyncio.to_thread(console.close)


# -- views -------------------------------------------------------------------------------------


async def test_top_refreshes_until_a_key_and_stats_show_counts() -> None:
    manager = ProcessManager()
    for _ in range(3):
        manager.register(Light())
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            await client.send("top -i 0.2\n")
            first = await client.read_until("(any key leaves)")
            assert "\x1b[2J" in first
            await client.read_until("(any key leaves)")  # refreshed
            await client.send("\n")
            await client.read_until(PROMPT)
            stats = await client.ask("stats")
            assert "processes: 3 running; 3 started, 0 exited" in stats
            assert re.search(r"^light\s+3\s+3\s+0\s+0\s+0$", stats, re.M)
            assert "top" in await client.ask("help")
            assert "--interval" not in await client.ask("help")
            assert "top [-i SECONDS]" in await client.ask("help top")


async def test_big_replies_are_cut() -> None:
    manager = ProcessManager()
    for _ in range(200):
        manager.register(Light())
    with Console(manager, max_output=2000) as console:
        async with await RawClient.open(console.address) as client:
            reply = await client.ask("ps --limit 200")
            assert "[reply cut at 2000 bytes" in reply
            assert len(reply.encode()) < 2200
            assert "showing" in await client.ask("ps --limit 2")


class Chatty(Process):
    kind = "chatty"

    def details(self) -> dict[str, Any]:
        return {"notes": "n" * 5000}


async def test_json_replies_stay_valid_at_the_output_limit() -> None:
    manager = ProcessManager()
    for _ in range(200):
        manager.register(Light())
    for n in range(30):
        light = manager.register(Light())
        light.name = f"gone-{n}-" + "g" * 100
        light.kill()
    with Console(manager, max_output=2000) as console:
        async with await RawClient.open(console.address) as client:
            # ps --json pages itself to fit: every page parses, and next_offset goes on.
            seen: list[int] = []
            offset: int | None = 0
            while offset is not None:
                reply = await client.ask(f"ps light --json --limit 200 --offset {offset}")
                assert len(reply.encode()) < 2000
                page = json.loads(reply)
                assert page["total"] == 200 and page["offset"] == offset
                assert 0 < page["count"] == len(page["processes"])
                seen += [p["pid"] for p in page["processes"]]
                offset = page["next_offset"]
                assert page["truncated"] is (offset is not None)  # cut short, not the end
                assert offset is None or offset == len(seen)
            assert seen == list(range(1, 201))
            assert page["offset"] > 0  # it took more than one page
            last = json.loads(await client.ask("ps --json --limit 2 --offset 198"))
            assert last["count"] == 2 and last["next_offset"] is None and not last["truncated"]
            # history --json keeps the newest records that fit.
            history = json.loads(await client.ask("history 30 --json"))
            assert history["total"] == 30 and history["truncated"]
            pids = [r["pid"] for r in history["processes"]]
            assert 0 < len(pids) == history["count"] < 30
            assert pids == list(range(231 - len(pids), 231))
            # Whatever else is too long for one reply answers a JSON error, not cut JSON.
            chatty = manager.register(Chatty())
            error = json.loads(await client.ask(f"info {chatty.pid} --json"))
            assert "over the 2000 byte limit" in error["error"]
            too_big = await client.ask("ps chatty --json")
            assert too_big.startswith(f"error: the record of pid {chatty.pid} alone is over")


async def test_quit_and_ctrl_d_end_the_session() -> None:
    before = sys.getswitchinterval()
    with Console(ProcessManager()) as console:
        async with await RawClient.open(console.address) as client:
            # Short GIL slices while a session is open.
            assert sys.getswitchinterval() == _GIL_SLICE
            await client.send("quit\n")
            assert "bye" in await client.read_all()
        await until(lambda: sys.getswitchinterval() == before)
        async with await RawClient.open(console.address) as client:
            await client.send(b"\x04")
            assert await client.read_all() == ""
        async with await RawClient.open(console.address) as client:
            await client.send("exit\n")
            assert "bye" in await client.read_all()


# -- scale ------------------------------------------------------------------------------------


async def test_ps_pages_100_000_processes() -> None:
    manager = ProcessManager()
    register = manager.register
    for _ in range(100_000):
        register(Light())
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            started = time.perf_counter()
            reply = await client.ask("ps")
            elapsed = time.perf_counter() - started
            assert "showing 1-50 of 100000" in reply
            assert elapsed < 10  # generous; benchmarks/console_ps.py measures it properly
            assert "showing 1-50 of 100000" in await client.ask("ps light --sort -started")
            data = json.loads(await client.ask("ps --json -o 99990"))
            assert data["total"] == 100_000
            assert len(data["processes"]) == 10 and data["next_offset"] is None
            assert "100000 running" in await client.ask("stats")
            by_name = await client.ask("ps --sort name -l 2 -o 60000")  # sorted in chunks
            assert re.search(r"^\s*60001\s.*\n\s*60002\s", by_name, re.M)  # and stable
            newest = await client.ask("ps --sort -pid -l 1")
            assert re.search(r"^100000\s", newest, re.M)
            killed = await client.ask("killall light")  # in slices of the app loop's time
            assert killed == "killed 100000 processes of kind light: 100000 exited"
            assert len(manager) == 0
