"""``App.run(workers=N)``: a real master forking real workers, driven by real signals.

Each test runs a small service in a child process (the master) whose workers
answer every connection with their pid, and talks to it over 127.0.0.1 the
way a client would. Waits are bounded polls, never sleeps to a guessed time.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archangel import App
from archangel.errors import InvalidArgument
from archangel.service.workers import per_worker_path, resolve_count, worker_pids

ROOT = Path(__file__).resolve().parent.parent

SERVICE = textwrap.dedent(
    """
    import asyncio, logging, os, sys
    from archangel import App, State

    logging.basicConfig(level=logging.INFO, format="%(process)d %(message)s")
    app = App("workers-test", shutdown_timeout=5)
    CRASH = os.environ.get("CRASH") == "1"

    def say(*words):
        # One write a line: workers share the pipe, and print() writes its
        # pieces one by one when stdout writes through (PYTHONUNBUFFERED).
        sys.stdout.write(" ".join(map(str, words)) + "\\n")
        sys.stdout.flush()

    async def handle(reader, writer):
        line = await reader.readline()
        if line.startswith(b"slow"):
            say("started", os.getpid())
            await asyncio.sleep(1.0)
        writer.write(f"{os.getpid()}\\n".encode())
        await writer.drain()

    @app.bus.on(State.START)
    async def start():
        if CRASH:
            raise RuntimeError("this worker cannot start")
        server = await app.serve_streams(handle, "127.0.0.1", 0)
        say("port", server.sockets[0].getsockname()[1])

    if __name__ == "__main__":
        sys.exit(app.run(workers=int(sys.argv[1]), loop=sys.argv[2]))
    """
)


class Service:
    """The master in a child process, with what it printed."""

    def __init__(self, tmp: Path, argv: list[str], **env: str) -> None:
        (tmp / "service.py").write_text(SERVICE)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
        )
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    @property
    def port(self) -> int:
        wait_for(lambda: any(line.startswith("port ") for line in self.lines), 5)
        return int(next(line for line in self.lines if line.startswith("port ")).split()[1])

    def workers(self) -> list[int]:
        return worker_pids(self.proc.pid)

    def ask(self, what: bytes = b"hi\n", timeout: float = 5.0) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(what)
            return int(sock.makefile().readline())

    def serving(self, count: int, within: float = 5.0) -> set[int]:
        """Ask until ``count`` different workers answered; their pids."""
        seen: set[int] = set()
        deadline = time.monotonic() + within
        while len(seen) < count and time.monotonic() < deadline:
            seen.add(self.ask())
        return seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def wait_for(condition: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {condition}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(
        workers: int = 2, loop: str = "uvloop", argv: list[str] | None = None, **env: str
    ) -> Service:
        made.append(Service(tmp_path, argv or ["service.py", str(workers), loop], **env))
        return made[-1]

    yield make
    for svc in made:
        for pid in svc.workers():
            os.kill(pid, signal.SIGKILL)
        svc.close()


class Hammer:
    """A client that connects without pause, one connection at a time, in a thread.

    ``refused`` counts the connections refused; ``errors`` lists every other
    failure (a connection cut before its answer).
    """

    def __init__(self, svc: Service) -> None:
        self.svc, self.port = svc, svc.port
        self.served: set[int] = set()
        self.refused = 0
        self.errors: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.served.add(self.svc.ask())
                self.count += 1
            except ConnectionRefusedError:
                self.refused += 1
            except (OSError, ValueError) as exc:
                self.errors.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_two_workers_serve_the_same_port(service: Callable[..., Service], loop: str) -> None:
    svc = service(2, loop)
    served = svc.serving(2)
    assert len(served) == 2
    assert served == set(svc.workers())
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0


def test_a_killed_worker_is_replaced_at_once(service: Callable[..., Service]) -> None:
    svc = service(2)
    first = svc.serving(2)
    victim = min(first)
    hammer = Hammer(svc)
    os.kill(victim, signal.SIGKILL)
    # The master forks the replacement as soon as it reaps the dead one.
    wait_for(lambda: len(set(svc.workers()) - first) == 1, 1.0)
    fresh = (set(svc.workers()) - first).pop()
    wait_for(lambda: fresh in hammer.served, 5)
    hammer.stop()
    assert hammer.refused == 0
    assert len(hammer.errors) <= 1  # the connection the victim had in hand, if any
    assert any("killed by SIGKILL" in line for line in svc.stderr)


def test_workers_die_with_a_killed_master(service: Callable[..., Service]) -> None:
    svc = service(2)
    pids = svc.serving(2)
    svc.proc.kill()
    svc.proc.wait(5)
    wait_for(lambda: not any(alive(pid) for pid in pids), 1.0)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sigterm_lets_a_slow_request_finish(service: Callable[..., Service], loop: str) -> None:
    svc = service(2, loop)
    svc.serving(2)
    answer: list[int] = []
    client = threading.Thread(target=lambda: answer.append(svc.ask(b"slow\n")))
    client.start()
    wait_for(lambda: any(line.startswith("started") for line in svc.lines), 5)
    svc.proc.send_signal(signal.SIGTERM)
    client.join(10)
    started = {int(line.split()[1]) for line in svc.lines if line.startswith("started")}
    assert answer and answer[0] in started
    assert svc.proc.wait(10) == 0


def test_sigquit_stops_at_once_cutting_the_request_in_flight(
    service: Callable[..., Service],
) -> None:
    svc = service(2)
    pids = svc.serving(2)
    answer: list[str] = []

    def slow() -> None:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
            sock.sendall(b"slow\n")
            answer.append(sock.makefile().readline())

    client = threading.Thread(target=slow)
    client.start()
    wait_for(lambda: any(line.startswith("started") for line in svc.lines), 5)
    svc.proc.send_signal(signal.SIGQUIT)
    client.join(10)
    assert answer == [""]  # cut, not answered: the handler was killed mid-sleep
    assert svc.proc.wait(10) == 0
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_hup_rolls_every_worker_without_refusing(
    service: Callable[..., Service], loop: str
) -> None:
    svc = service(2, loop)
    old = svc.serving(2)
    hammer = Hammer(svc)
    svc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(svc.workers()) == 2 and not set(svc.workers()) & old, 10)
    fresh = set(svc.workers())
    try:
        wait_for(lambda: fresh <= hammer.served, 5)
    except AssertionError:
        raise AssertionError(
            f"{fresh} {hammer.served} {svc.workers()} {svc.stderr[-30:]}"
        ) from None
    hammer.stop()
    assert (hammer.refused, hammer.errors) == (0, [])
    assert hammer.count > 0
    assert svc.proc.poll() is None


def test_ttin_and_ttou_change_the_count(service: Callable[..., Service]) -> None:
    svc = service(2)
    svc.serving(2)
    svc.proc.send_signal(signal.SIGTTIN)
    wait_for(lambda: len(svc.workers()) == 3, 5)
    assert len(svc.serving(3)) == 3
    for left in (2, 1):  # one at a time: the kernel merges a signal already pending
        svc.proc.send_signal(signal.SIGTTOU)
        wait_for(lambda: len(svc.workers()) == left, 10)  # noqa: B023
    svc.proc.send_signal(signal.SIGTTOU)  # never below one
    assert svc.ask() in svc.workers()
    assert len(svc.workers()) == 1


def test_a_worker_that_cannot_start_makes_the_master_give_up(
    service: Callable[..., Service],
) -> None:
    svc = service(2, CRASH="1")
    assert svc.proc.wait(20) == 1
    log = "\n".join(svc.stderr)
    assert "this worker cannot start" in log
    assert "exited with status 1 before it was ready" in log
    assert "giving up" in log
    assert "respawning in 0.2 s" in log  # backed off on the way


def test_usr2_writes_a_dump_per_worker(service: Callable[..., Service], tmp_path: Path) -> None:
    svc = service(2)
    pids = svc.serving(2)
    svc.proc.send_signal(signal.SIGUSR2)
    import tempfile

    base = os.path.join(tempfile.gettempdir(), "workers-test.state.json")
    files = [per_worker_path(base, pid) for pid in pids]
    wait_for(lambda: all(os.path.exists(f) for f in files), 5)
    for f in files:
        os.unlink(f)


def test_worker_counts() -> None:
    assert resolve_count("auto") == len(os.sched_getaffinity(0))
    assert resolve_count("3") == 3
    with pytest.raises(InvalidArgument, match="workers must be"):
        resolve_count(0)
    with pytest.raises(InvalidArgument, match="workers must be"):
        App("x").run(workers="many")
    assert per_worker_path("/tmp/a.state.json", 7) == "/tmp/a.state.7.json"


def test_the_command_line_runs_workers_and_shows_them(
    service: Callable[..., Service], tmp_path: Path
) -> None:
    pidfile = str(tmp_path / "service.pid")
    argv = ["-m", "archangel", "run", "service:app", "--workers", "2", "--pidfile", pidfile]
    svc = service(argv=argv)
    pids = svc.serving(2)
    assert Path(pidfile).read_text().split()[0] == str(svc.proc.pid)  # the master's

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        command = [sys.executable, "-m", "archangel", *args]
        return subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=10
        )

    status = cli("status", "--pidfile", pidfile)
    assert status.returncode == 0
    assert f"running: pid {svc.proc.pid}" in status.stdout
    assert {int(line.split()[1].rstrip(",")) for line in status.stdout.splitlines()[1:]} == pids
    assert cli("signal", "--pidfile", pidfile, "term").returncode == 0
    assert svc.proc.wait(10) == 0
    bad = cli("run", "service:app", "--workers", "many")
    assert bad.returncode == 2
    assert "--workers" in bad.stderr


def _notifications(sock: socket.socket) -> list[tuple[int, str]]:
    """The (sender pid, message) datagrams waiting on ``sock``."""
    got = []
    ucred = struct.Struct("3i")
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(ucred.size))
        except BlockingIOError:
            return got
        pid = next(
            ucred.unpack(value[: ucred.size])[0]
            for level, kind, value in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        )
        got.append((pid, data.decode()))


def test_only_the_master_talks_to_systemd(service: Callable[..., Service], tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(path)
        sock.setblocking(False)
        svc = service(2, NOTIFY_SOCKET=path, WATCHDOG_USEC="100000")  # a ping every 50 ms
        svc.serving(2)
        messages: list[tuple[int, str]] = []

        def said(word: str, times: int = 1) -> bool:
            messages.extend(_notifications(sock))
            return sum(word in text for _, text in messages) >= times

        wait_for(lambda: said("READY=1"), 5)
        svc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: said("READY=1", 2), 10)
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0
        said("STOPPING=1")
    words = [text.split("\n")[0] for _, text in messages]
    assert [word for word in words if word != "WATCHDOG=1"] == [
        "READY=1",
        "RELOADING=1",
        "READY=1",
        "STOPPING=1",
    ]
    assert "WATCHDOG=1" in words  # the master keeps the watchdog
    assert {pid for pid, _ in messages} == {svc.proc.pid}


def test_the_example_runs_as_its_docstring_says(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    pidfile = tmp_path / "echo.pid"
    command = [sys.executable, "examples/workers.py", "--port", "0", "--pidfile", str(pidfile)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all(line.startswith("worker ") for line in lines), lines
        port = int(lines[0].rsplit(",", 1)[1].strip(" )\n"))
        seen = set()
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"hello\n")
                pid, _, rest = sock.makefile().readline().partition(": ")
                assert rest == "hello\n"
                seen.add(int(pid))
        assert seen == set(worker_pids(proc.pid))
        assert pidfile.read_text().split()[0] == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


VERSIONED = textwrap.dedent(
    """
    import os
    from archangel import App, State

    VERSION = "one"
    app = App("versioned", shutdown_timeout=5)

    async def handle(reader, writer):
        writer.write(f"{os.getpid()} {VERSION}\\n".encode())

    @app.bus.on(State.START)
    async def start():
        await app.serve_streams(handle, "127.0.0.1", int(os.environ["PORT"]))
    """
)


def test_a_roll_under_the_command_line_serves_changed_code(tmp_path: Path) -> None:
    (tmp_path / "versioned.py").write_text(VERSIONED)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PORT": str(port)}
    command = [sys.executable, "-m", "archangel", "run", "versioned:app", "--workers", "2"]
    master = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)

    def answer() -> list[str]:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                return sock.makefile().readline().split()
        except OSError:
            return []

    try:
        wait_for(lambda: answer()[1:] == ["one"], 5)
        (tmp_path / "versioned.py").write_text(VERSIONED.replace('"one"', '"number two"'))
        master.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                len(worker_pids(master.pid)) == 2
                and all(answer()[1:] == ["number", "two"] for _ in range(20))
            ),
            10,
        )
        master.send_signal(signal.SIGTERM)
        assert master.wait(10) == 0
    finally:
        if master.poll() is None:
            master.kill()
        master.wait(5)


ACTIVATED = textwrap.dedent(
    """
    import os, sys
    from archangel import App, State

    app = App("activated-workers", shutdown_timeout=5)

    async def handle(reader, writer):
        writer.write(f"{os.getpid()}\\n".encode())

    @app.bus.on(State.START)
    async def start():
        await app.serve_streams(handle, "127.0.0.1", 1)  # port 1: never bound, inherited

    sys.exit(app.run(workers=2, loop=sys.argv[1]))
    """
)


def test_socket_activated_workers_share_the_inherited_socket(tmp_path: Path) -> None:
    from tests.test_systemd import ENV_VARS, SPAWNER

    (tmp_path / "spawner.py").write_text(SPAWNER)
    (tmp_path / "activated.py").write_text(ACTIVATED)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["PYTHONPATH"] = str(ROOT / "src")
    spawner = [sys.executable, str(tmp_path / "spawner.py"), str(tmp_path / "activated.py")]
    master = subprocess.Popen(
        [*spawner, "uvloop", "web", "self", str(listener.fileno())],
        pass_fds=[listener.fileno()],
        env=env,
    )
    listener.close()  # the master's copy, at fd 3, is the only one left
    try:

        def ask() -> int:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                return int(sock.makefile().readline())

        seen: set[int] = set()
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(ask())
        assert seen == set(worker_pids(master.pid))
        assert len(seen) == 2
        master.send_signal(signal.SIGTERM)
        assert master.wait(10) == 0
    finally:
        if master.poll() is None:
            master.kill()
        master.wait(5)
