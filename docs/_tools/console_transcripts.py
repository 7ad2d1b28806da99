"""Regenerate the console transcripts that docs/console.rst includes, from a real console.

Usage: ``python docs/_tools/console_transcripts.py [OUTDIR]`` (default
``docs/_generated``). It starts a :class:`~archangel.console.Console` on
127.0.0.1 with a few real processes and tasks (an echo server with a client
connected, a task process, a plain task), talks to it over a plain socket as
``nc`` does, and writes one ``console_<name>.txt`` per transcript: the
commands as typed after the prompt and the console's answers.

What changes from run to run is replaced by fixed values (:func:`normalise`):
peer ports, dates, durations, and the directories of this file, of archangel
and of the standard library. ``tests/test_console_docs.py`` runs this script
into a temporary directory and compares the result with the committed files,
so the transcripts cannot drift from what the console prints.
"""

from __future__ import annotations

import asyncio
import linecache
import re
import socket
import sys
import sysconfig
from pathlib import Path
from typing import Any

import archangel
from archangel import Process, ProcessManager
from archangel.console import Console

PROMPT = "archangel> "
HERE = Path(__file__).resolve().parent


class Echo(Process, asyncio.Protocol):
    """An echo connection: a process of kind ``conn`` that counts what it got."""

    kind = "conn"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.bytes_in = 0

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.transport.write(data)

    def details(self) -> dict[str, Any]:
        return {**super().details(), "bytes_in": self.bytes_in}


class Job(Process):
    """A unit of work with no transport (what ``kill`` ends in the transcript)."""

    kind = "job"


#: The app's own code in the transcripts, as if it were the file ``/srv/jobs.py``:
#: a fixed path, so ``ps`` and ``where`` show the same text wherever this runs.
JOBS_PATH = "/srv/jobs.py"
JOBS = """\
import asyncio


async def ticker():
    while True:
        await asyncio.sleep(1)


async def plain_wait(event):
    await event.wait()
"""


def load_jobs() -> dict[str, Any]:
    """The functions of :data:`JOBS`, their source known to ``linecache`` (for ``where``)."""
    linecache.cache[JOBS_PATH] = (len(JOBS), None, JOBS.splitlines(True), JOBS_PATH)
    namespace: dict[str, Any] = {}
    exec(compile(JOBS, JOBS_PATH, "exec"), namespace)
    return namespace


class Client:
    """A plain blocking socket, as ``nc``: whole lines in, the answers (up to the prompt) out.

    Used from a thread (``asyncio.to_thread``), so that while the console
    answers, the app's loop is idle and its main task waits on one known line.
    """

    def __init__(self, address: Any) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.buffer = b""
        self.until_prompt()  # the banner

    def until_prompt(self) -> str:
        marker = PROMPT.encode()
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"the console closed the session: {self.buffer!r}")
            self.buffer += data
        end = self.buffer.index(marker)
        text, self.buffer = self.buffer[:end], self.buffer[end + len(marker) :]
        return text.decode().replace("\r\n", "\n")

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.until_prompt()

    def close(self) -> None:
        self.sock.close()


def normalise(text: str) -> str:
    """The transcript with what changes from run to run replaced by fixed values."""
    ports: dict[str, str] = {}

    def port(match: re.Match[str]) -> str:
        return ports.setdefault(match.group(1), str(50312 + 6 * len(ports)))

    text = re.sub(r"(?<=127\.0\.0\.1:)(\d+)", port, text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", "2026-12-03 14:50:21.103", text)
    text = re.sub(r"\b\d+\.\ds\b", "0.1s", text)
    places = {
        str(Path(archangel.__file__).resolve().parent): "/srv/archangel",
        sysconfig.get_paths()["stdlib"]: "/usr/lib/python3.11",
    }
    for real, shown in places.items():
        text = text.replace(f'File "{real}/', f'File "{shown}/')
    return text


async def transcripts() -> dict[str, str]:
    """Each transcript's name and text: commands after the prompt, then the answers."""
    jobs_code = load_jobs()
    manager = ProcessManager()
    loop = asyncio.get_running_loop()
    found: dict[str, str] = {}
    with Console(manager) as console:
        me = await asyncio.to_thread(Client, console.address)
        # Tasks get their ids in the order the console first sees them: one at a time.
        await asyncio.to_thread(me.ask, "tasks")
        event = asyncio.Event()
        waiter = asyncio.create_task(jobs_code["plain_wait"](event), name="plain-waiter")
        await asyncio.sleep(0)
        await asyncio.to_thread(me.ask, "tasks")
        tick = manager.spawn(jobs_code["ticker"], name="ticker")
        await asyncio.sleep(0)
        await asyncio.to_thread(me.ask, "tasks")
        server = await loop.create_server(lambda: manager.register(Echo()), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"hello")
        await reader.readexactly(5)
        echo = next(p for p in manager if isinstance(p, Echo))
        jobs = [manager.register(Job()) for _ in range(2)]
        other = await asyncio.to_thread(Client, console.address)  # someone else's session
        await asyncio.to_thread(other.ask, "ps")

        def record(name: str, *lines: str) -> None:
            found[name] = "".join(f"{PROMPT}{line}\n{answers[line]}" for line in lines)

        answers: dict[str, str] = {}
        commands = [
            "ps",
            "ps conn",
            f"info {echo.pid}",
            "tasks",
            f"where {tick.pid}",
            "where plain-waiter",
            f"kill {jobs[0].pid} 99",
            "history",
            "sessions",
        ]
        for line in commands:
            answers[line] = normalise(await asyncio.to_thread(me.ask, line))
        record("ps", "ps", "ps conn")
        record("info", f"info {echo.pid}")
        record("tasks", "tasks")
        record("where", f"where {tick.pid}", "where plain-waiter")
        record("kill", f"kill {jobs[0].pid} 99", "history")
        record("sessions", "sessions")
        other.close()
        me.close()
        writer.close()
        server.close()
        event.set()
        await waiter
        tick.kill()
    return found


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE.parent / "_generated"
    out.mkdir(parents=True, exist_ok=True)
    for name, text in asyncio.run(transcripts()).items():
        (out / f"console_{name}.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
