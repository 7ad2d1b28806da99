"""Console security and robustness: token, binding, Unix socket mode, limits, garbage input."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import stat
from pathlib import Path

import pytest

from archangel import ArchangelError, Process, ProcessManager
from archangel.console import Console
from archangel.errors import ConsoleError
from tests.console_helpers import PROMPT, TIMEOUT, Light, RawClient, open_telnet, write_buffers
from tests.helpers import serve, until

# -- lifecycle ------------------------------------------------------------------------------


async def test_lifecycle_errors_and_idempotent_close() -> None:
    manager = ProcessManager()
    console = Console(manager)
    assert console.address is None
    assert repr(console) == "<Console 127.0.0.1:0 [new]>"
    console.start()
    try:
        assert isinstance(console.address, tuple)
        host, port = console.address
        assert host == "127.0.0.1" and port > 0
        assert repr(console) == f"<Console 127.0.0.1:{port} [running]>"
        with pytest.raises(ConsoleError, match="has already been started"):
            console.start()
    finally:
        console.close()
    console.close()  # idempotent
    assert repr(console).endswith("[closed]>")
    with pytest.raises(ConsoleError, match="has already been started"):
        console.start()
    Console(manager).close()  # closing one never started is fine


def test_start_without_a_loop_is_an_error() -> None:
    with pytest.raises(ConsoleError, match="needs the app's loop"):
        Console(ProcessManager()).start()


def test_construction_checks() -> None:
    manager = ProcessManager()
    with pytest.raises(ConsoleError, match="neither a ProcessManager nor an App"):
        Console(object())
    for host in ("0.0.0.0", "", "::", "10.1.2.3", "example.com"):
        with pytest.raises(ConsoleError, match="token is required"):
            Console(manager, host=host)
    Console(manager, host="0.0.0.0", token="t0ken")  # fine with a token
    Console(manager, host="::1")
    Console(manager, host="localhost")
    Console(manager, host="0.0.0.0", path="/tmp/never-bound.sock")  # a Unix socket: no token
    with pytest.raises(ConsoleError, match="token"):
        Console(manager, token=" spaced ")
    with pytest.raises(ConsoleError, match="port"):
        Console(manager, port=70000)
    with pytest.raises(ConsoleError, match="positive"):
        Console(manager, max_sessions=0)
    assert issubclass(ConsoleError, ArchangelError)


async def test_a_port_in_use_is_a_loud_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        console = Console(ProcessManager(), port=port)
        with pytest.raises(ConsoleError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            console.start()
        assert isinstance(info.value.__cause__, OSError)
        assert repr(console).endswith("[closed]>")
        console.close()


# -- token ------------------------------------------------------------------------------------


async def test_token_is_required_as_the_first_line() -> None:
    manager = ProcessManager()
    with Console(manager, token="s3cret", token_timeout=0.3) as console:
        async with await RawClient.open(console.address, banner=False) as client:
            assert await client.read_until("token: ") == "token: "
            await client.send("wrong\nps\n")
            text = await client.read_all()
            assert "bad token: disconnected" in text and "showing" not in text
        async with await RawClient.open(console.address, banner=False) as client:
            await client.send("s3cret\n")
            assert "type 'help'" in await client.read_until(PROMPT)
            assert "no processes match" in await client.ask("ps")
        async with await RawClient.open(console.address, banner=False) as client:
            await client.read_until("token: ")
            assert "no token received: disconnected" in await client.read_all()  # too slow
        async with await RawClient.open(console.address, banner=False) as client:
            await client.send(b"\x04")  # Ctrl-D instead of a token
            assert "bad token" in await client.read_all()


# -- Unix socket -------------------------------------------------------------------------------


async def test_unix_socket_is_created_0600_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "console.sock"
    old_umask = os.umask(0)  # the worst case: the mode must not come from the umask
    try:
        console = Console(ProcessManager(), path=path)
        console.start()
    finally:
        os.umask(old_umask)
    try:
        assert console.address == str(path)
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        async with await RawClient.open(console.address) as client:
            assert "no processes match" in await client.ask("ps")
    finally:
        console.close()
    assert not path.exists()


async def test_unix_socket_path_checks(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening: a stale socket file
    with Console(ProcessManager(), path=stale) as console:
        async with await RawClient.open(console.address) as client:
            assert "no processes match" in await client.ask("ps")
        other = Console(ProcessManager(), path=stale)
        with pytest.raises(ConsoleError, match="in use by a live listener"):
            other.start()
    plain = tmp_path / "plain-file"
    plain.write_text("not a socket")
    with pytest.raises(ConsoleError, match="exists and is not a socket"):
        Console(ProcessManager(), path=plain).start()
    assert plain.read_text() == "not a socket"


# -- limits and garbage -------------------------------------------------------------------


class Echo(Process, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def echoes(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"still serving\n")
        return await asyncio.wait_for(reader.readline(), TIMEOUT) == b"still serving\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_too_many_sessions_are_refused_and_slots_come_back() -> None:
    manager = ProcessManager()
    server, port = await serve(manager.register(Echo))
    try:
        with Console(manager, max_sessions=16) as console:
            assert isinstance(console.address, tuple)

            async def one() -> tuple[RawClient, str]:
                client = await RawClient.open(console.address, banner=False)
                text = await client.read_until(PROMPT)  # a prompt, or everything up to EOF
                return client, text

            results, served = await asyncio.gather(
                asyncio.gather(*(one() for _ in range(200))),
                echoes(port),  # the app serves while the console turns sessions away
            )
            assert served
            accepted = [c for c, text in results if text.endswith(PROMPT)]
            refused = [text for _, text in results if "too many sessions (16 open)" in text]
            assert len(accepted) == 16
            assert len(refused) == 184
            assert "16 sessions open" in await accepted[0].ask("stats")
            await asyncio.gather(*(c.close() for c, _ in results))

            async def admitted() -> bool:
                client = await RawClient.open(console.address, banner=False)
                try:
                    return (await client.read_until(PROMPT)).endswith(PROMPT)
                finally:
                    await client.close()

            for _ in range(100):  # closed sessions give their slots back
                if await admitted():
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("no session admitted after the others closed")
        assert await echoes(port)  # and the app serves on
    finally:
        server.close()
        await server.wait_closed()


async def test_refused_sessions_are_summed_up_with_their_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="archangel.console")
    with Console(ProcessManager(), max_sessions=2) as console:
        assert isinstance(console.address, tuple)
        held = [await RawClient.open(console.address) for _ in range(2)]
        for _ in range(30):
            client = await RawClient.open(console.address, banner=False)
            assert "too many sessions (2 open)" in await client.read_all()
            await client.close()
        for client in held:
            await client.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("archangel.console")]
    # The first at once, the rest in one line when the interval ends (here: at close).
    assert lines == [
        "console: session refused (the session table is full) from 127.0.0.1",
        "console: in the last 10 s, 29 x session refused (the session table is full) "
        "(127.0.0.1 x29)",
    ]


async def test_a_flood_of_keys_does_not_starve_other_sessions() -> None:
    with Console(ProcessManager()) as console:
        flooder = await RawClient.open(console.address)
        try:
            # Like nc: a 4000-character line, then 1 MB of Ctrl-L (redraw the line), all
            # at once and never read. The console feeds them a piece at a time, yielding
            # between pieces, and builds no redraw for a client it does not echo to.
            flooder.writer.write(b"x" * 4000 + b"\x0c" * (1 << 20))
            await asyncio.sleep(0.1)  # it is chewing on them
            async with asyncio.timeout(5):
                async with await RawClient.open(console.address) as other:
                    assert "no processes match" in await other.ask("ps")
            assert max(await write_buffers(console)) < 64 * 1024
        finally:
            flooder.writer.transport.abort()


async def test_a_client_that_does_not_read_cannot_grow_the_consoles_buffers() -> None:
    with Console(ProcessManager()) as console:
        screen, writer = await open_telnet(console)  # a telnet client: the console echoes
        try:
            writer.write("x" * 4000 + "\r\n")
            assert "unknown command" in await screen.until(PROMPT)
            # From now on it never reads. Each Up, Ctrl-C shows the 4000-character line
            # again: 200 MB of echo, if the console wrote on regardless.
            writer.write("\x1b[A\x03\x0c" * 50_000)
            high = 0
            async with asyncio.timeout(TIMEOUT):
                while high < 32 * 1024:  # until the unread output holds the console back
                    high = max([high, *await write_buffers(console)])
                    await asyncio.sleep(0.005)
            for _ in range(20):  # and while it does
                high = max([high, *await write_buffers(console)])
                await asyncio.sleep(0.005)
            assert high < 512 * 1024
            async with await RawClient.open(console.address) as other:
                assert "no processes match" in await other.ask("ps", timeout=5)
        finally:
            writer.close()


async def test_garbage_input_leaves_console_and_app_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="archangel.console.session.telnet")
    manager = ProcessManager()
    light = manager.register(Light())
    rng = random.Random(1234)
    with Console(manager, max_line=4096) as console:
        # Random bytes, telnet commands and all (avoid a first 0x16, which reads as a TLS
        # hello and is closed). A random Ctrl-D or telnet DO LOGOUT may end the session:
        # either way, what it got is what a console writes, and the console answers on.
        async with await RawClient.open(console.address) as client:
            with contextlib.suppress(ConnectionError):
                await client.send(b"x" + rng.randbytes(256 * 1024) + b"\x03\r\nps\r\n")
            async with await RawClient.open(console.address) as other:
                assert "showing 1-1 of 1" in await other.ask("ps")
            with contextlib.suppress(ConnectionError):
                text = await client.read_all()
            assert "Traceback" not in text and "failed:" not in text
        # Random data (no Ctrl-D, no telnet IAC): thousands of garbage lines, each answered,
        # and the same session still answers.
        async with await RawClient.open(console.address) as client:
            junk = rng.randbytes(64 * 1024).replace(b"\x04", b"").replace(b"\xff", b"")
            client.writer.write(junk + b"\x03\r\nps\r\n")  # read while it is sent
            text = await client.read_until("showing 1-1 of 1")
            assert text.count("error: unknown command") > 100
            assert "Traceback" not in text and "failed:" not in text
        # A 1 MB line: refused whole, the session goes on.
        async with await RawClient.open(console.address) as client:
            reply = await client.ask("ps " + "A" * (1 << 20))
            assert reply == "error: line too long (more than 4096 characters): ignored"
            assert "showing 1-1 of 1" in await client.ask("ps")
        # A flood of telnet negotiation: every DO/DONT/WILL/WONT, twenty times over.
        async with await RawClient.open(console.address) as client:
            flood = bytearray()
            for _ in range(20):
                for option in range(256):
                    if option == 18:  # DO LOGOUT (RFC 727) asks to be logged out: honoured
                        continue
                    for command in (251, 252, 253, 254):
                        flood += bytes((255, command, option))
            await client.send(bytes(flood))
            await client.send("\nps\n")
            assert "showing 1-1 of 1" in await client.read_until(PROMPT)
        # Subnegotiations: large, odd, cut short.
        async with await RawClient.open(console.address) as client:
            junk = rng.randbytes(100_000).replace(b"\xff", b"")
            await client.send(b"\xff\xfa\x18" + junk + b"\xff\xf0")  # SB TTYPE <junk> SE
            await client.send(b"\xff\xfa\x1f\x00\x50\xff\xf1")  # SB NAWS cut short by a NOP
            await client.send(b"\xff\xfa\xff\xf0")  # SB with no option
            await client.send("\nps\n")
            assert "showing 1-1 of 1" in await client.read_until(PROMPT)
        # Invalid UTF-8 and control characters in a command line.
        async with await RawClient.open(console.address) as client:
            assert "unknown command" in await client.ask("\xffps\x01\x02")
            await client.send(b"\xc3\x28\xa0\xa1\n")
            assert "unknown command" in await client.read_until(PROMPT)
        # Still serving, and the app is unharmed.
        async with await RawClient.open(console.address) as client:
            assert "showing 1-1 of 1" in await client.ask("ps")
            assert f"pid {light.pid}: killed" in await client.ask(f"kill {light.pid}")
        await until(lambda: len(manager) == 0)
        assert manager.counters["killed"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no command crashed
    telnet_records = [r for r in caplog.records if r.name == "archangel.console.session.telnet"]
    assert telnet_records  # the client's bad telnet was logged...
    assert {r.levelno for r in telnet_records} == {logging.DEBUG}  # ...at DEBUG only
