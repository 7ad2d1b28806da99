"""The console at its edges: half-closing clients, clients that drop, do not read or flood,
idle sessions, token guessing, malformed telnet, the banner and the state dump.

Real clients throughout: ``nc -N`` and ``socat`` subprocesses, raw sockets that
half-close or reset, a Python subprocess for what logging prints on stderr.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import telnetlib3

from archangel import ProcessManager
from archangel.console import Console
from archangel.console import table as console_table
from archangel.console.client import TelnetFilter
from archangel.console.guard import Digest, Throttle
from archangel.console.protocol import _READ_LIMIT, ConsoleProtocol
from archangel.errors import ConsoleError
from archangel.service import dumps
from tests.console_helpers import (
    PROMPT,
    TIMEOUT,
    Light,
    RawClient,
    clean,
    on_console,
    open_telnet,
    settled,
    write_buffers,
)

#: What the reader may hold: twice its limit before it pauses, plus one read of the socket.
READ_BOUND = 2 * _READ_LIMIT + 256 * 1024


def tool(name: str) -> str:
    """The path of a Debian tool the test drives; a clear failure if it is missing."""
    path = shutil.which(name)
    assert path, f"{name} is not installed (Debian package: see noxfile.py DEBIAN_TOOLS)"
    return path


def registered(count: int) -> ProcessManager:
    manager = ProcessManager()
    for _ in range(count):
        manager.register(Light())
    return manager


async def small_window_client(address: Any) -> RawClient:
    """A raw client whose socket has a small receive buffer, so a reply backs up at once."""
    loop = asyncio.get_running_loop()
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, address)
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawClient(reader, writer)
    await client.read_until(PROMPT)
    return client


def small_send_buffers(console: Console) -> None:
    """Shrink the send buffer of the console's sockets (on its loop): a slow network."""
    for transport in console._transports:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def sessions(console: Console) -> list[ConsoleProtocol]:
    """The console's live session protocols (on its loop)."""
    protocols = (t.get_protocol() for t in list(console._transports) if not t.is_closing())
    return [p for p in protocols if isinstance(p, ConsoleProtocol)]


def reader_buffers(console: Console) -> list[int]:
    """Bytes received and not yet read by each session (on the console's loop)."""
    return [len(p.reader._buffer) for p in sessions(console) if p.reader is not None]


# -- a client that half-closes gets every answer -----------------------------------------


@pytest.mark.parametrize("over", ["tcp", "unix"])
@pytest.mark.parametrize("client", ["nc", "socat"])
async def test_a_half_closing_client_gets_every_answer(
    client: str, over: str, tmp_path: Path
) -> None:
    manager = registered(1)
    path = str(tmp_path / "console.sock") if over == "unix" else None
    with Console(manager, path=path) as console:
        if isinstance(console.address, tuple):
            host, port = console.address
            nc_to, socat_to = [host, str(port)], f"TCP:{host}:{port}"
        else:
            nc_to, socat_to = ["-U", console.address], f"UNIX-CONNECT:{console.address}"
        if client == "nc":
            argv = [tool("nc"), "-N", *nc_to]  # -N: shutdown(SHUT_WR) at the end of stdin
        else:
            # socat half-closes at the end of stdin too; -t: how long it then waits for
            # the other side (0.5 s by default: generous here, for a loaded machine).
            argv = [tool("socat"), "-t", "30", "-", socat_to]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(b"ps\nstats\nquit\n"), TIMEOUT)
    text = clean(out, TelnetFilter())
    assert proc.returncode == 0, err
    assert "showing 1-1 of 1" in text  # ps
    assert "processes: 1 running" in text  # stats
    assert text.rstrip().endswith("bye")  # quit


@pytest.mark.parametrize("over", ["tcp", "unix"])
async def test_a_raw_socket_that_shuts_down_writing_gets_its_answers(
    over: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "console.sock") if over == "unix" else None
    with Console(registered(2), path=path) as console:
        client = await RawClient.open(console.address)
        try:
            await client.send("ps\nhelp ps\n")  # no quit: the end of the input ends it
            client.writer.write_eof()  # shutdown(SHUT_WR)
            text = await client.read_all()
        finally:
            await client.close()
        assert "showing 1-2 of 2" in text
        assert "ps [KIND]" in text  # help ps
        await settled(console)


async def test_input_left_unread_at_the_end_does_not_reset_the_answers() -> None:
    # The session ends (quit) with half a megabyte it never read behind the line:
    # closing then would send a reset, which can destroy the answer in flight.
    # The console shuts its side down and reads the rest away instead.
    with Console(ProcessManager()) as console:
        client = await RawClient.open(console.address)
        try:
            await client.send(b"quit\n" + b"x" * (512 * 1024))
            assert (await client.read_all()).rstrip().endswith("bye")
        finally:
            await client.close()
        await settled(console)


# -- logging over a Unix socket -------------------------------------------------------------

_UNIX_SESSION = """
import asyncio, logging, sys
logging.basicConfig(level=logging.DEBUG)
from archangel import ProcessManager
from archangel.console import Console

async def main():
    with Console(ProcessManager(), path=sys.argv[1]):
        nc = await asyncio.create_subprocess_exec(
            sys.argv[2], "-N", "-U", sys.argv[1], stdin=-1, stdout=-1
        )
        out, _ = await nc.communicate(b"ps\\nquit\\n")
        sys.stdout.write(out.decode("utf-8", "replace"))

asyncio.run(main())
"""


def test_a_unix_socket_session_logs_no_logging_errors(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _UNIX_SESSION, str(tmp_path / "c.sock"), tool("nc")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "bye" in done.stdout
    # The console names the connection in its own log lines (telnetlib3's are dropped).
    assert "console: connection from unix socket" in done.stderr
    assert "ConsoleProtocol" not in done.stderr
    assert "--- Logging error ---" not in done.stderr


# -- memory is bounded and returns ----------------------------------------------------------


@pytest.mark.parametrize("leave", ["reset", "hang up"])
async def test_sessions_left_in_the_middle_of_a_reply_leave_nothing_alive(leave: str) -> None:
    manager = registered(8000)  # ps --json: about 1 MB, far more than the socket buffers
    with Console(manager) as console:
        clients = [await small_window_client(console.address) for _ in range(4)]
        await on_console(console, lambda: small_send_buffers(console))
        for client in clients:
            await client.send("ps --json --limit 10000\n")
        # Until each session is held back in drain() by its unread reply.
        async with asyncio.timeout(TIMEOUT):
            while not (sizes := await write_buffers(console)) or min(sizes) <= 64 * 1024:
                await asyncio.sleep(0.01)
        protocols = await on_console(console, lambda: sessions(console))
        assert len(protocols) == 4
        refs = [weakref.ref(p) for p in protocols] + [weakref.ref(p.session) for p in protocols]
        del protocols
        for client in clients:
            if leave == "reset":  # RST, as a client that was killed
                sock = client.writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.close()
        await settled(console)  # every session ended: none waits in drain() forever
        gc.collect()
        assert [r() for r in refs if r() is not None] == []
        async with await RawClient.open(console.address) as client:
            assert "showing 1-1 of 8000" in await client.ask("ps -l 1")


@pytest.mark.parametrize("leave", ["quit", "hang up", "reset", "telnet quit"])
async def test_an_ended_session_is_freed_by_its_last_reference_without_the_collector(
    leave: str,
) -> None:
    # No reference cycle may keep an ended session, its protocol, its reader and
    # writer (and their buffers) waiting for the cyclic collector: checked with
    # the collector off, so only reference counts free them.
    with Console(registered(3)) as console:
        writer: telnetlib3.TelnetWriter | None = None
        if leave.startswith("telnet"):
            screen, writer = await open_telnet(console)
            client = None
        else:
            client = await RawClient.open(console.address)
        protocols = await on_console(console, lambda: sessions(console))
        assert len(protocols) == 1
        parts = (protocols[0], protocols[0].session, protocols[0].reader, protocols[0].writer)
        refs = [weakref.ref(part) for part in parts]
        del protocols, parts
        gc.collect()
        gc.disable()
        try:
            if writer is not None:
                writer.write("ps\r\n")
                assert "showing 1-3 of 3" in await screen.until(PROMPT)
                writer.write("quit\r\n")
                await screen.until("bye")
                writer.close()
            else:
                assert client is not None
                assert "showing 1-3 of 3" in await client.ask("ps")
                if leave == "quit":
                    await client.send("quit\n")
                    assert (await client.read_all()).rstrip().endswith("bye")
                elif leave == "reset":
                    sock = client.writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await client.close()
            await settled(console)
            await on_console(console, lambda: None)  # the session task's callbacks have run
            alive = [type(part).__name__ for ref in refs if (part := ref()) is not None]
            assert alive == []
        finally:
            gc.enable()


async def test_memory_freed_by_ended_sessions_is_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The C allocator keeps what it freed; once sessions stop ending, the console
    # asks glibc (Debian's C library) to give it back: malloc_trim(0).
    monkeypatch.setattr(console_table, "_TRIM_AFTER", 0.05)
    with Console(registered(10)) as console:
        assert console._table._trim is not None, "no malloc_trim: not glibc?"
        for _ in range(3):
            async with await RawClient.open(console.address) as client:
                assert "showing 1-10 of 10" in await client.ask("ps")
        async with asyncio.timeout(TIMEOUT):
            while await on_console(console, lambda: console._table.trims) < 1:
                await asyncio.sleep(0.01)
        assert await on_console(console, lambda: console._table.trims) == 1  # once, not per end


async def test_a_client_that_sends_without_reading_is_not_read_either() -> None:
    with Console(registered(8000)) as console:
        client = await small_window_client(console.address)
        try:
            # Commands with long replies, as fast as the socket takes them, never reading.
            client.writer.write(b"ps --json --limit 10000\n" * 1_000_000)  # 24 MB
            async with asyncio.timeout(TIMEOUT):
                while True:
                    reading = await on_console(
                        console, lambda: [t.is_reading() for t in console._transports]
                    )
                    if reading == [False]:
                        break
                    await asyncio.sleep(0.01)
            assert client.writer.transport.get_write_buffer_size() > 0  # it has more to send
            assert max(await on_console(console, lambda: reader_buffers(console))) <= READ_BOUND
        finally:
            client.writer.transport.abort()
        await settled(console)


@pytest.mark.parametrize("key", [b"x", b"\0", b"\x0c"], ids=["keys", "NUL", "Ctrl-L"])
async def test_a_flood_from_a_reading_client_is_read_no_faster_than_it_is_handled(
    key: bytes,
) -> None:
    with Console(ProcessManager()) as console:
        client = await RawClient.open(console.address)
        try:
            answer = asyncio.ensure_future(client.read_until("no processes match"))
            client.writer.write(key * (4 << 20) + b"\r\nps\r\n")  # 4 MB, read while sent
            highest = 0
            while not answer.done():
                buffered = await on_console(console, lambda: reader_buffers(console))
                highest = max(highest, *buffered, 0)
                await asyncio.wait({answer}, timeout=0.002)
            assert "no processes match" in answer.result()
            assert highest <= READ_BOUND
        finally:
            await client.close()
        await settled(console)


# -- the operator is never locked out -------------------------------------------------------


async def test_idle_connections_cannot_lock_the_operator_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(console_table, "MAKE_ROOM_IDLE", 0.2)
    with Console(ProcessManager(), max_sessions=4) as console:
        idlers = [await RawClient.open(console.address) for _ in range(4)]  # they send nothing
        try:
            await asyncio.sleep(0.3)  # idle long enough to be pushed out
            async with await RawClient.open(console.address) as operator:
                assert "no processes match" in await operator.ask("ps")
                ends = {asyncio.ensure_future(c.read_all()): c for c in idlers}
                done, pending = await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                assert "closed to make room for another session" in done.pop().result()
        finally:
            for client in idlers:
                await client.close()


async def test_authenticated_sessions_are_never_pushed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(console_table, "MAKE_ROOM_IDLE", 0.0)
    with Console(ProcessManager(), token="s3cret", max_sessions=2) as console:
        operators = []
        for _ in range(2):
            client = await RawClient.open(console.address, banner=False)
            await client.send("s3cret\n")
            await client.read_until(PROMPT)
            operators.append(client)
        try:
            async with await RawClient.open(console.address, banner=False) as other:
                assert "too many sessions (2 open)" in await other.read_all()
            for client in operators:
                assert "no processes match" in await client.ask("ps")
        finally:
            for client in operators:
                await client.close()


async def test_idle_sessions_time_out_but_one_watching_top_is_not_idle() -> None:
    with pytest.raises(ConsoleError, match="positive"):
        Console(ProcessManager(), idle_timeout=0)
    Console(ProcessManager(), idle_timeout=None)  # never
    with Console(ProcessManager(), idle_timeout=0.5) as console:
        async with (
            await RawClient.open(console.address) as idle,
            await RawClient.open(console.address) as watcher,
        ):
            await watcher.send("top -i 0.2\n")
            assert "idle for 0.5 s: disconnected" in await idle.read_all()
            for _ in range(3):  # it was shown screens all along, and is still
                await watcher.read_until("archangel top")
            await watcher.send("\n")  # any key leaves top
            await watcher.read_until(PROMPT)
            assert "no processes match" in await watcher.ask("ps")


# -- token guessing ----------------------------------------------------------------------


async def test_token_guessing_is_throttled_and_its_warnings_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="archangel.console")

    async def guess(address: Any) -> None:
        while True:
            async with await RawClient.open(address, banner=False) as client:
                await client.send("not-the-token\n")
                await client.read_all()

    started = time.monotonic()
    with Console(ProcessManager(), token="s3cret", max_sessions=64) as console:
        async with await RawClient.open(console.address, banner=False) as scan:
            scan.writer.write_eof()  # connects and leaves without a word: no guess, no warning
            assert "bad token" not in await scan.read_all()
        guessers = [asyncio.ensure_future(guess(console.address)) for _ in range(8)]
        await asyncio.sleep(1.5)  # guessing as fast as the console answers, 8 at a time
        for task in guessers:
            task.cancel()
        await asyncio.gather(*guessers, return_exceptions=True)
    elapsed = time.monotonic() - started
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 3, warnings  # the first at once, then one line per interval
    assert warnings[0] == "console: bad token from 127.0.0.1"
    summed = re.search(r"(\d+) x bad token \(", " ".join(warnings))
    checked = 1 + (int(summed.group(1)) if summed else 0)
    burst, rate = Throttle().burst, Throttle().rate
    assert checked <= burst + rate * elapsed + 1  # a few a second, where it was thousands


def test_throttle_lets_a_burst_through_then_a_few_a_second() -> None:
    throttle = Throttle(burst=2, rate=10.0, max_wait=0.25)
    assert throttle.reserve("a") == 0.0
    assert throttle.reserve("a") == 0.0
    waits = [throttle.reserve("a") for _ in range(3)]  # queued behind each other
    assert waits[0] == pytest.approx(0.1, abs=0.02)
    assert waits[1] == pytest.approx(0.2, abs=0.02)
    assert waits[2] is None  # would wait longer than max_wait: refused
    assert throttle.reserve("b") == 0.0  # other peers are not held back
    throttle.refund("b")
    throttle.refund("b")  # a good token costs nothing, and the bucket never overflows
    assert [throttle.reserve("b"), throttle.reserve("b")] == [0.0, 0.0]
    crowd = Throttle(burst=1, rate=1.0, max_wait=0.0, max_peers=2)
    assert [crowd.reserve(p) for p in ("p1", "p2", "p3")] == [0.0, 0.0, 0.0]
    assert crowd.reserve("p4") is None  # beyond max_peers, new peers share one bucket
    assert len(crowd) == 3


async def test_digest_logs_the_first_warning_at_once_and_sums_up_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.digest")
    caplog.set_level(logging.WARNING, logger="tests.digest")
    digest = Digest(log, interval=0.05)
    for n in range(5):
        digest.note("bad token", f"10.0.0.{n % 2}")
    assert [r.getMessage() for r in caplog.records] == ["console: bad token from 10.0.0.0"]
    async with asyncio.timeout(TIMEOUT):
        while len(caplog.records) < 2:
            await asyncio.sleep(0.01)
    summary = caplog.records[1].getMessage()
    assert "4 x bad token (10.0.0.1 x2, 10.0.0.0 x2)" in summary
    async with asyncio.timeout(TIMEOUT):  # a quiet interval ends the window...
        while digest._timer is not None:
            await asyncio.sleep(0.01)
    digest.note("bad token", "10.0.0.9")  # ...so the next warning is logged at once
    assert caplog.records[-1].getMessage() == "console: bad token from 10.0.0.9"
    digest.close()
    assert len(caplog.records) == 3


# -- malformed telnet ----------------------------------------------------------------------


async def test_malformed_telnet_negotiation_does_not_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    with Console(ProcessManager()) as console:
        async with await RawClient.open(console.address) as client:
            short_naws = b"\xff\xfa\x1f\x00\x50\xff\xf0"  # IAC SB NAWS with 2 bytes of 4, IAC SE
            await client.send(short_naws * (12_000 // len(short_naws)) + b"ps\n")
            assert "no processes match" in await client.read_until("no processes match")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    telnet = [r for r in caplog.records if "telnet" in r.name]
    assert len(telnet) <= 50  # a few lines per connection, then one saying the rest is not


# -- the banner ----------------------------------------------------------------------------


async def test_the_banner_counts_the_processes_running_when_a_session_begins() -> None:
    manager = ProcessManager()
    with Console(manager) as console:
        async with await RawClient.open(console.address, banner=False) as client:
            assert "0 processes running" in await client.read_until(PROMPT)
        for _ in range(3):
            manager.register(Light())
        async with await RawClient.open(console.address, banner=False) as client:
            assert "3 processes running" in await client.read_until(PROMPT)


# -- the state dump --------------------------------------------------------------------------


class Peer(Light):
    __slots__ = ()

    def details(self) -> dict[str, Any]:
        return {"peer": ("127.0.0.1", 4242)}


def _comparable(text: str) -> dict[str, Any]:
    data = json.loads(text)
    data.pop("time")
    data["tasks"] = sorted(t["name"] for t in data["tasks"])  # where they wait differs
    return data


async def test_the_state_dump_is_built_in_slices_and_keeps_its_shape() -> None:
    manager = ProcessManager()
    for _ in range(3000):
        manager.register(Peer())
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_work())
    try:
        await asyncio.sleep(0)
        options: dict[str, Any] = {"name": "big", "bus_state": "RUN", "addresses": [("::1", 80)]}
        before = turns
        pieces = await dumps.state_text(manager, **options)
        during = turns - before
        whole = json.dumps(dumps.state(manager, **options), indent=1, default=str)
    finally:
        other.cancel()
    assert during >= 3  # the loop ran other work while the state was built
    text = "".join(pieces)
    assert _comparable(text) == _comparable(whole)
    assert text.count("\n") == whole.count("\n")  # laid out the same too
    assert json.loads(text)["processes"][0]["details"] == {"peer": ["127.0.0.1", 4242]}
    empty = json.loads("".join(await dumps.state_text(ProcessManager(), name="none")))
    assert empty["processes"] == [] and empty["processes_total"] == 0


async def test_the_state_dump_picks_its_tasks_in_slices_and_counts_them_all() -> None:
    """50,000 tasks: the first MAX_TASKS by name are described, all are counted, and
    the loop runs other work while they are picked (no process table to slice here)."""
    release = asyncio.Event()
    sleepers = [asyncio.ensure_future(release.wait()) for _ in range(50_000)]
    for n, task in enumerate(sleepers):
        task.set_name(f"sleeper-{n:05d}")
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_work())
    try:
        await asyncio.sleep(0)
        before = turns
        state = json.loads("".join(await dumps.state_text(ProcessManager(), name="tasks")))
        during = turns - before
    finally:
        other.cancel()
        release.set()
        await asyncio.gather(*sleepers)
    assert state["tasks_total"] >= 50_000
    names = [t["name"] for t in state["tasks"]]
    assert len(names) == dumps.MAX_TASKS and names == sorted(names)
    ours = [name for name in names if name.startswith("sleeper-")]
    assert len(ours) >= dumps.MAX_TASKS - 10  # a few of the test's own tasks sort first
    assert ours == [f"sleeper-{n:05d}" for n in range(len(ours))]
    assert during >= 3  # picking 1,000 of 50,000 yielded to the loop
