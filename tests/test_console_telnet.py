"""The console with a real telnet client (telnetlib3), and the ``archangel console`` client."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import telnetlib3

import archangel
from archangel import ProcessManager, ProcessState
from archangel.console import Console
from archangel.console import protocol as console_protocol
from archangel.console.client import _TOKEN_ENV, main, run_client, run_script
from archangel.errors import ConsoleError
from tests.console_helpers import (
    PROMPT,
    TIMEOUT,
    Light,
    RawClient,
    on_console,
    open_telnet,
    settled,
)

ROOT = Path(__file__).resolve().parent.parent
#: Where the archangel under test comes from, for the subprocesses that run it.
SRC = str(Path(archangel.__file__).resolve().parent.parent)


async def read_until(reader: telnetlib3.TelnetReader, marker: str, timeout: float = 10) -> str:
    text = ""
    async with asyncio.timeout(timeout):
        while marker not in text:
            chunk = await reader.read(4096)
            if not chunk:
                break
            text += chunk if isinstance(chunk, str) else chunk.decode()
    return text


async def test_telnet_client_gets_echo_line_editing_and_history() -> None:
    manager = ProcessManager()
    for _ in range(3):
        manager.register(Light())
    with Console(manager) as console:
        screen, writer = await open_telnet(console)
        try:
            writer.write("ps -l 1\r\n")
            out = await screen.until("showing 1-1 of 3")
            assert out.startswith("ps -l 1")  # echoed by the console, as typed
            await screen.until(PROMPT)
            # Backspace, and words killed with Ctrl-W, before Enter.
            writer.write("inf 2x\x7f\x17\x17info 2\r\n")
            out = await screen.until("name      Light")
            assert "\x08 \x08" in out  # the erased character, erased on screen
            await screen.until(PROMPT)
            # Up arrow twice: the first command again (the history).
            writer.write("\x1b[A\x1b[A\r\n")
            await screen.until("showing 1-1 of 3")
            await screen.until(PROMPT)
            # Left arrow and insert in the middle: "ps -l 2" from "ps - 2".
            writer.write("ps - 2\x1b[D\x1b[Dl\r\n")
            await screen.until("showing 1-2 of 3")
            await screen.until(PROMPT)
            # Tab completes a command name; Ctrl-C abandons the line.
            writer.write("his\t")
            await screen.until("tory ")
            writer.write("\x03")
            await screen.until("^C")
            await screen.until(PROMPT)
            writer.write("quit\r\n")
            await screen.until("bye")
        finally:
            writer.close()


async def test_a_line_over_max_line_is_refused_whole_never_cut_short_and_run() -> None:
    manager = ProcessManager()
    lights = [manager.register(Light()) for _ in range(20)]
    with Console(manager, max_line=12) as console:
        screen, writer = await open_telnet(console)
        try:
            # With server echo the line stops growing at 12 characters ("kill 1 2 3 4")...
            writer.write("kill 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\r\n")
            out = await screen.until(PROMPT)
            assert "\akill 1 2 3 4\r\n" in out
            # ...and is refused whole: it never runs as "kill 1 2 3 4".
            assert "error: line too long (more than 12 characters): ignored" in out
            writer.write("kill 16\r\n")
            assert "pid 16: killed" in await screen.until(PROMPT)
        finally:
            writer.close()
        async with await RawClient.open(console.address) as client:  # nc: the same
            reply = await client.ask("kill 1 2 3 4 5 6 7 8 9")
            assert reply == "error: line too long (more than 12 characters): ignored"
            assert "pid 17: killed" in await client.ask("kill 17")
    assert [p.pid for p in lights if p.state is ProcessState.EXITED] == [16, 17]


async def test_telnet_client_with_a_token() -> None:
    with Console(ProcessManager(), token="open-sesame") as console:
        assert isinstance(console.address, tuple)
        reader, writer = await telnetlib3.open_connection(
            *console.address, connect_minwait=0.05, connect_maxwait=1.0
        )
        try:
            assert "token: " in await read_until(reader, "token: ")
            writer.write("open-sesame\r\n")
            out = await read_until(reader, PROMPT)
            assert "open-sesame" not in out  # a token is never echoed
            assert "type 'help'" in out
        finally:
            writer.close()


async def test_nc_gets_its_prompt_at_once() -> None:
    with Console(ProcessManager()) as console:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with await RawClient.open(console.address, banner=False) as client:
            await client.read_until(PROMPT)
            assert loop.time() - started < 0.5  # no waiting for telnet negotiation
            assert "no processes match" in await client.ask("ps")


# -- telnet commands only for a client that speaks telnet ----------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (Debian package: see noxfile.py DEBIAN_TOOLS)"
    return path


async def _send_and_half_close(address: tuple[str, int] | str | None, data: bytes) -> bytes:
    """What a plain socket gets back for ``data``, sent then ``shutdown(SHUT_WR)`` (``nc -N``)."""
    if isinstance(address, str):
        reader, writer = await asyncio.open_unix_connection(address)
    else:
        assert address is not None
        reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(TIMEOUT):
            return await reader.read()  # until the console closes
    finally:
        writer.close()


@pytest.mark.parametrize("over", ["tcp", "unix"])
async def test_a_plain_socket_client_is_never_sent_a_telnet_command(
    over: str, tmp_path: Path
) -> None:
    manager = ProcessManager()
    manager.register(Light())
    path = tmp_path / "c.sock" if over == "unix" else None
    with Console(manager, path=path) as console:
        reply = await _send_and_half_close(console.address, b"ps\n")
        await settled(console)
    assert b"\xff" not in reply  # no IAC: no DO TERMINAL-TYPE before the banner
    text = reply.decode("utf-8")  # clean text, whole
    assert text.startswith("archangel console (manager): 1 process running;")
    assert re.search(r"^\s*1\s+light\s+new\s", text, re.M)
    assert "showing 1-1 of 1" in text


async def test_printf_ps_piped_into_nc_greps_as_text() -> None:
    manager = ProcessManager()
    manager.register(Light())
    with Console(manager) as console:
        assert isinstance(console.address, tuple)
        host, port = console.address
        # grep calls a matching line with a byte that is not UTF-8 "binary".
        nc = f"{_tool('nc')} -N {host} {port}"
        line = f"printf 'ps\\n' | {nc} | grep -e 'archangel console' -e light"
        command = await asyncio.create_subprocess_exec(
            "/bin/bash",
            "-c",
            f"set -o pipefail; {line}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        async with asyncio.timeout(30):
            out, err = await command.communicate()
    assert command.returncode == 0, err
    assert "binary file matches" not in out.decode() + err.decode()
    banner, row = out.decode().splitlines()
    assert banner.startswith("archangel console (manager): 1 process running;"), out
    assert re.fullmatch(r"\s*1\s+light\s+new\s.*", row), out


async def test_a_client_that_speaks_telnet_first_is_answered_in_telnet_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Silence would bring the offer only after an hour: what comes is the answer
    # to the client's own IAC WILL TERMINAL-TYPE.
    monkeypatch.setattr(console_protocol, "TELNET_PROBE", 3600.0)
    with Console(ProcessManager()) as console:
        assert isinstance(console.address, tuple)
        reader, writer = await asyncio.open_connection(*console.address)
        try:
            writer.write(b"\xff\xfb\x18")  # IAC WILL TTYPE
            received = b""
            async with asyncio.timeout(TIMEOUT):
                while b"\xff\xfd\x18" not in received:  # IAC DO TTYPE
                    chunk = await reader.read(4096)
                    assert chunk, received
                    received += chunk
        finally:
            writer.close()


def _telnet_in_a_terminal(host: str, port: int, seen: threading.Event) -> bytes:
    """The real ``telnet`` on a pty: its first prompt, then ``ps`` typed; the screen."""
    master, slave = os.openpty()
    screen = b""

    def until(marker: bytes) -> None:
        nonlocal screen
        deadline = time.monotonic() + 20
        while marker not in screen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                screen += os.read(master, 65536)

    try:
        child = subprocess.Popen(
            [_tool("telnet"), host, str(port)], stdin=slave, stdout=slave, stderr=slave
        )
        try:
            until(PROMPT.encode())
            seen.wait(30)  # the console has negotiated: character mode, its echo
            os.write(master, b"ps\r")
            until(b"showing 1-1 of 1")
            os.write(master, b"quit\r")
            until(b"closed by foreign host")
        finally:
            child.kill()
            child.wait()
        return screen
    finally:
        os.close(master)
        os.close(slave)


async def test_real_telnet_is_offered_its_options_once_it_waits() -> None:
    # telnet on a port other than 23 says nothing until the server negotiates.
    manager = ProcessManager()
    manager.register(Light())
    with Console(manager) as console:
        assert isinstance(console.address, tuple)
        seen = threading.Event()
        job = asyncio.create_task(asyncio.to_thread(_telnet_in_a_terminal, *console.address, seen))

        def echoing() -> list[bool]:
            return [
                bool(p.writer.will_echo)
                for t in list(console._transports)
                if isinstance(p := t.get_protocol(), console_protocol.ConsoleProtocol)
                and p.writer is not None
            ]

        async with asyncio.timeout(TIMEOUT):
            while await on_console(console, echoing) != [True]:
                await asyncio.sleep(0.01)
        seen.set()
        screen = (await job).decode("utf-8", "replace")
    assert "showing 1-1 of 1" in screen, screen
    assert "ps\r\n" in screen  # echoed once (by the console), not twice
    assert "bye" in screen


# -- the archangel console client ----------------------------------------------------------


def _run(address: str, lines: str, token: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    status = run_client(address, token, stdin=io.StringIO(lines), stdout=out)
    return status, out.getvalue()


def _script(address: str, lines: str, token: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_script(address, lines.splitlines(), token, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


async def test_client_over_tcp_and_unix(tmp_path: Path) -> None:
    manager = ProcessManager()
    manager.register(Light())
    with Console(manager) as console:
        assert isinstance(console.address, tuple)
        host, port = console.address
        status, out = await asyncio.to_thread(_run, f"{host}:{port}", "ps\nstats\n")
        assert status == 0
        assert "showing 1-1 of 1" in out and "processes: 1 running" in out
        assert "\xff" not in out and "\r" not in out  # telnet bytes and CRs stripped
        assert out.rstrip().endswith("bye")  # the client sent quit at the end of stdin
        status, out = await asyncio.to_thread(_run, str(port), "quit\n")  # PORT alone
        assert status == 0 and "bye" in out
    path = tmp_path / "c.sock"
    with Console(manager, path=path) as console:
        status, out, _ = await asyncio.to_thread(_script, f"unix:{path}", "ps --json\n")
        assert status == 0 and json.loads(out)["total"] == 1  # the answer alone


async def test_archangel_console_command_in_a_subprocess() -> None:
    manager = ProcessManager()
    manager.register(Light())
    with Console(manager) as console:
        assert isinstance(console.address, tuple)
        host, port = console.address
        command = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "archangel",
            "console",
            f"{host}:{port}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        async with asyncio.timeout(30):
            out, err = await command.communicate(b"ps\nquit\n")
    assert command.returncode == 0, err.decode()
    text = out.decode()
    # stdin is not a terminal: a script, so only the answer (no banner, prompt or bye).
    assert text.startswith("PID  KIND")
    assert re.search(r"^\s*1\s+light\s+new\s", text, re.M)
    assert text.endswith("showing 1-1 of 1\n")
    assert "\xff" not in text and "\r" not in text


async def test_client_token_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with Console(ProcessManager(), token="tok") as console:
        assert isinstance(console.address, tuple)
        address = "{}:{}".format(*console.address)
        status, out = await asyncio.to_thread(_run, address, "ps\n", "tok")
        assert status == 0 and "no processes match" in out
        status, out = await asyncio.to_thread(_run, address, "ps\n", "wrong")
        assert status == 1 and "bad token: disconnected" in out
        status, out, err = await asyncio.to_thread(_script, address, "ps\n", "tok")
        assert (status, out, err) == (0, "no processes match (of 0 running)\n", "")
        status, out, err = await asyncio.to_thread(_script, address, "ps\n", "wrong")
        assert (status, out, err) == (1, "", "bad token: disconnected\n")
        monkeypatch.setenv(_TOKEN_ENV, "tok")
        monkeypatch.setattr("sys.stdin", io.StringIO("ps\n"))
        assert await asyncio.to_thread(main, [address]) == 0
    with pytest.raises(ConsoleError, match="not HOST:PORT"):
        run_client("localhost:http")
    with pytest.raises(ConsoleError, match="cannot connect to the console at unix:/nonexistent"):
        run_client("unix:/nonexistent/console.sock")
    assert main(["127.0.0.1:notaport"]) == 2
    assert not os.path.exists("/nonexistent")


async def test_connections_are_logged_by_the_console_at_debug_not_by_telnetlib3_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with Console(ProcessManager(), token="open-sesame") as console:
        assert isinstance(console.address, tuple)
        for _ in range(3):  # a telnet session, as an operator's
            reader, writer = await telnetlib3.open_connection(
                *console.address, connect_minwait=0.05, connect_maxwait=1.0
            )
            try:
                await read_until(reader, "token: ")
                writer.write("open-sesame\r\n")
                await read_until(reader, PROMPT)
                writer.write("quit\r\n")
                assert "bye" in await read_until(reader, "bye")
            finally:
                writer.close()
        for _ in range(3):  # a probe that connects and goes (a health check)
            client = await RawClient.open(console.address, banner=False)
            await client.read_until("token: ")
            client.writer.transport.abort()
        await settled(console)
        # Another telnetlib3 server in the process keeps its own lines.
        other = await telnetlib3.create_server("127.0.0.1", 0, shell=None, connect_maxwait=0.1)
        try:
            _, port = other.sockets[0].getsockname()[:2]
            _, writer = await telnetlib3.open_connection("127.0.0.1", port, connect_maxwait=0.1)
            async with asyncio.timeout(TIMEOUT):
                while not any(r.name.startswith("telnetlib3.server") for r in caplog.records):
                    await asyncio.sleep(0.01)
            writer.close()
        finally:
            other.close()
            await other.wait_closed()
    console_lines = [r for r in caplog.records if "ConsoleProtocol" in r.getMessage()]
    assert console_lines == []  # none of telnetlib3's, at any level
    ours = [r for r in caplog.records if r.name.startswith("archangel.console")]
    opened = [r for r in ours if re.fullmatch(r"console: connection from [\d.:]+", r.getMessage())]
    ended = [
        r
        for r in ours
        if re.match(r"console: connection from [\d.:]+ (ended|lost)", r.getMessage())
    ]
    assert len(opened) == 6 and {r.levelno for r in opened} == {logging.DEBUG}
    assert len(ended) == 6 and {r.levelno for r in ended} == {logging.DEBUG}
    at_info = [r.getMessage() for r in ours if r.levelno >= logging.INFO]
    assert len(at_info) == 3 and all("let in (good token)" in m for m in at_info), at_info
    assert any(  # the other server's connection, as telnetlib3 logs it
        r.name.startswith("telnetlib3.server") and r.getMessage().startswith("Connection from")
        for r in caplog.records
    )


@pytest.mark.parametrize("given", ["--token", "environment"])
async def test_archangel_console_with_a_token_never_shows_the_token_prompt(given: str) -> None:
    with Console(ProcessManager(), token="tok") as console:
        assert isinstance(console.address, tuple)
        address = "{}:{}".format(*console.address)

        async def run(token: str) -> tuple[int | None, str, str]:
            env = {**os.environ, "PYTHONPATH": SRC}
            argv = [sys.executable, "-m", "archangel", "console", address]
            if given == "--token":
                argv += ["--token", token]
            else:
                env[_TOKEN_ENV] = token
            command = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            async with asyncio.timeout(30):
                out, err = await command.communicate(b"ps\n")
            return command.returncode, out.decode(), err.decode()

        status, out, err = await run("tok")
        assert (status, out, err) == (0, "no processes match (of 0 running)\n", "")
        status, out, err = await run("wrong")
        assert (status, out, err) == (1, "", "bad token: disconnected\n")
