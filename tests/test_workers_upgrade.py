"""SIGURG: the master re-executes itself with the listening sockets, under a client loop.

The service answers each connection with its code's version and its pid; the
test rewrites the version in the file, sends SIGURG to the master, and checks
that a client connecting without pause was never refused, that the new code
answers, and that the pidfile names the new master once the old one is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archangel.service.workers import worker_pids
from workers_helpers import Master, wait_for

SERVICE = textwrap.dedent(
    """
    import asyncio, logging, os
    from archangel import App, State

    VERSION = "v1"
    app = App("upgrade-workers", shutdown_timeout=5, console={"port": 0})

    async def handle(reader, writer):
        await reader.readline()
        writer.write(f"{VERSION} {os.getpid()}\\n".encode())
        await writer.drain()

    @app.bus.on(State.START)
    async def start():
        server = await app.serve_streams(handle, "127.0.0.1", 0)
        logging.getLogger("service").info("port %d", server.sockets[0].getsockname()[1])
    """
)


class Client:
    """Connects without pause, one connection at a time, in a thread; counts what happens."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.versions: set[str] = set()
        self.refused = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    sock.sendall(b"hi\n")
                    self.versions.add(sock.makefile().readline().split()[0])
            except ConnectionRefusedError:
                self.refused += 1
            except (OSError, IndexError) as exc:
                self.errors.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    made: list[Master] = []

    def make(loop: str = "asyncio") -> Master:
        made.append(Master(tmp_path, 2, loop, SERVICE))
        return made[-1]

    yield make
    for m in made:
        # A new master is not the test's child: stop it (and its workers) by pid.
        new = pid_in(m.pidfile)
        if new is not None and new != m.proc.pid:
            for pid in [new, *worker_pids(new)]:
                os.kill(pid, signal.SIGKILL)
        m.close()


def pid_in(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text())
    except (OSError, ValueError):
        return None


def service_port(m: Master) -> int:
    wait_for(lambda: m.logged(r"port \d+$"), 10)
    return int(m.logged(r"port \d+$")[0].rsplit(" ", 1)[1])


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_urg_upgrades_the_master_and_no_connection_is_refused(
    master: Callable[..., Master], loop: str
) -> None:
    m = master(loop)
    old_workers = m.ready(2)
    port = service_port(m)
    client = Client(port)
    try:
        wait_for(lambda: "v1" in client.versions, 10)
        service = m.tmp / "service.py"
        service.write_text(service.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
        os.kill(m.proc.pid, signal.SIGURG)
        assert m.proc.wait(30) == 0  # the old master stopped once the new one was ready
        wait_for(lambda: pid_in(m.pidfile) not in (None, m.proc.pid), 10)
        wait_for(lambda: "v2" in client.versions, 10)
    finally:
        client.stop()
    assert client.refused == 0
    assert client.errors == []
    new = int(m.pidfile.read_text())
    assert len(worker_pids(new)) == 2
    assert not any(alive(pid) for pid in old_workers)
    wait_for(lambda: m.logged(rf"^.* {new} INFO .*console on \("), 10)  # the new master's

    os.kill(new, signal.SIGTERM)
    wait_for(lambda: not alive(new), 20)
    assert not m.pidfile.exists()


def test_a_new_master_that_cannot_start_leaves_the_old_one_serving(
    master: Callable[..., Master],
) -> None:
    m = master()
    workers = m.ready(2)
    service = m.tmp / "service.py"
    service.write_text(service.read_text().replace('VERSION = "v1"', "VERSION = ("))
    os.kill(m.proc.pid, signal.SIGURG)
    wait_for(lambda: m.logged("upgrade failed: the new master"), 20)
    assert m.proc.poll() is None
    assert worker_pids(m.proc.pid) == workers
    assert int(m.pidfile.read_text()) == m.proc.pid
    with socket.create_connection(("127.0.0.1", service_port(m)), timeout=10) as sock:
        sock.sendall(b"hi\n")
        assert sock.makefile().readline().startswith("v1 ")
