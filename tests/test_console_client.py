"""``archangel console`` as scripts and operators run it: ``-c``, pipes, and a real terminal."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shlex
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import archangel
from archangel import ProcessManager
from archangel.console import Console
from tests.console_helpers import Light

#: Where the archangel under test comes from, for the subprocesses that run it.
SRC = str(Path(archangel.__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": SRC}
CLIENT = [sys.executable, "-m", "archangel", "console"]


def _address(console: Console) -> str:
    assert isinstance(console.address, tuple)
    return "{}:{}".format(*console.address)


async def _run(*argv: str, stdin: bytes = b"") -> tuple[int | None, str, str]:
    command = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    async with asyncio.timeout(60):
        out, err = await command.communicate(stdin)
    return command.returncode, out.decode(), err.decode()


async def test_dash_c_prints_only_the_answers_and_fails_on_an_error() -> None:
    manager = ProcessManager()
    manager.register(Light())
    with Console(manager, token="tok") as console:
        address = _address(console)
        status, out, err = await _run(*CLIENT, address, "--token", "tok", "-c", "ps --json")
        assert (status, err) == (0, "")
        assert json.loads(out)["total"] == 1 and out.count("\n") == 1  # one line: the JSON
        status, out, err = await _run(
            *CLIENT, address, "--token", "tok", "-c", "ps -l 1", "-c", "frobnicate", "-c", "lag"
        )
        assert status == 1 and err == ""  # an answer was an error: status 1
        assert out.startswith("PID  KIND") and "\nerror: unknown command frobnicate" in out
        assert "last probe:" in out and "archangel>" not in out and "token:" not in out
        # Lines on a stdin that is not a terminal: the same, one answer after another.
        status, out, _ = await _run(*CLIENT, address, "--token", "tok", stdin=b"stats\nquit\n")
        assert status == 0 and out.startswith("processes: 1 running") and "bye" not in out


async def test_dash_c_without_the_token_it_asks_for_fails_at_once() -> None:
    manager = ProcessManager()
    with Console(manager, token="tok", token_timeout=3600.0) as console:
        address = _address(console)
        env_token = ENV.pop("ARCHANGEL_CONSOLE_TOKEN", None)
        try:
            async with asyncio.timeout(30):  # not the console's token timeout (an hour)
                status, out, err = await _run(*CLIENT, address, "-c", "ps")
        finally:
            if env_token is not None:
                ENV["ARCHANGEL_CONSOLE_TOKEN"] = env_token
        assert (status, out) == (1, "")
        assert err == (
            f"the console at {address} asks for a token: give --token "
            "or set $ARCHANGEL_CONSOLE_TOKEN\n"
        )


async def test_a_closed_pipe_ends_it_quietly() -> None:
    manager = ProcessManager()
    lights = [manager.register(Light()) for _ in range(3000)]
    with Console(manager) as console:
        client = " ".join(shlex.quote(arg) for arg in CLIENT)
        line = f"{client} {_address(console)} -c 'ps -l 3000' | head -n 2"
        status, out, err = await _run("/bin/bash", "-c", f"set -o pipefail; {line}")
        assert out.split()[:2] == ["PID", "KIND"] and out.count("\n") == 2
        assert err == ""  # no BrokenPipeError traceback, no "Exception ignored"
        assert status == 0
    assert len(lights) == 3000


def _read_until(fd: int, marker: bytes, timeout: float = 20.0) -> bytes:
    """From a pty's master side: what comes until ``marker`` (or the child closes it)."""
    data = b""
    loop_deadline = timeout
    while marker not in data and loop_deadline > 0:
        ready, _, _ = select.select([fd], [], [], 0.1)
        loop_deadline -= 0.1
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child's side is closed
            break
        if not chunk:
            break
        data += chunk
    return data


def _readline_waits(fd: int, timeout: float = 20.0) -> None:
    """Until ``readline`` has taken the terminal for its next line (canonical mode off).

    A Ctrl-D typed before that is read by the terminal's line discipline as
    the end of an empty line, which ``readline`` then never sees as an EOF.
    """
    deadline = time.monotonic() + timeout
    while termios.tcgetattr(fd)[3] & termios.ICANON and time.monotonic() < deadline:
        time.sleep(0.005)


def _client_in_a_terminal(
    address: str, typed: bytes, end: str, ready: threading.Event
) -> tuple[int, bool, bytes]:
    """Run the client on a real pty: wait for its prompt, type, end it; (status, echo?, screen)."""
    master, slave = os.openpty()
    try:
        # setsid --ctty: the pty becomes the client's controlling terminal, so
        # Ctrl-C typed on it sends SIGINT, as in a real terminal.
        child = subprocess.Popen(
            ["setsid", "--ctty", *CLIENT, address],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**ENV, "TERM": "xterm"},
        )
        screen = _read_until(master, b"archangel> ")
        if typed:
            os.write(master, typed)
            screen += _read_until(master, b"archangel> ")
        _readline_waits(slave)
        ready.set()  # the client waits in readline for the next line
        if end == "ctrl-c":
            os.write(master, b"\x03")  # the terminal sends SIGINT to the client
        elif end == "ctrl-d":
            os.write(master, b"\x04")
        screen += _read_until(master, b"\n\n\n", timeout=3.0)
        status = child.wait(timeout=20)
        echo = bool(termios.tcgetattr(slave)[3] & termios.ECHO)
        return status, echo, screen
    finally:
        os.close(master)
        os.close(slave)


async def test_the_terminal_is_restored_on_every_way_out() -> None:
    manager = ProcessManager()
    for end in ("ctrl-c", "ctrl-d", "server"):
        with Console(manager) as console:
            address = _address(console)
            ready = threading.Event()
            job = asyncio.create_task(
                asyncio.to_thread(_client_in_a_terminal, address, b"ps\n", end, ready)
            )
            if end == "server":  # the console closes the session under the client
                await asyncio.to_thread(ready.wait, 30)
                console.close()
            status, echo, screen = await job
        assert echo, (end, screen)  # the terminal echoes again, whichever way it ended
        assert b"Traceback" not in screen, screen
        assert status == {"ctrl-c": 130, "ctrl-d": 0, "server": 1}[end], (end, screen)
