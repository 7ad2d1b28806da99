"""One console over every worker, the master's dumps, ``archangel signal ttin/ttou``.

Each test runs ``archangel run service:app --workers 2`` in a child process
(the master, with a console on port 0), finds the console's port in its log
and talks to it with a raw socket, as ``nc`` would. Each worker runs one
task process named ``sleeper``. Waits are bounded polls.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archangel.service.workers import per_worker_path
from workers_helpers import ROOT, Master, Session, wait_for

SERVICE = textwrap.dedent(
    """
    import asyncio, os, tempfile
    from archangel import App, State

    here = os.path.dirname(os.path.abspath(__file__))
    app = App(
        "console-workers",
        shutdown_timeout=5,
        console={"port": 0},
        state_file=os.path.join(here, "state.json"),
    )

    async def sleeper():
        await asyncio.sleep(3600)

    @app.bus.on(State.START)
    async def start():
        app.manager.spawn(sleeper(), name="sleeper")
    """
)


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    made: list[Master] = []

    def make(workers: int = 2, loop: str = "asyncio", *extra: str) -> Master:
        made.append(Master(tmp_path, workers, loop, SERVICE, extra))
        return made[-1]

    yield make
    for m in made:
        m.close()


def sleepers(ps: str) -> dict[int, int]:
    """``ps``'s rows of the sleeper tasks: worker pid -> process pid."""
    rows = [line.split() for line in ps.splitlines() if " sleeper " in f" {line} "]
    return {int(row[0]): int(row[1]) for row in rows}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_master_console_shows_and_kills_in_every_worker(
    master: Callable[..., Master], loop: str
) -> None:
    m = master(2, loop)
    first, second = m.ready(2)
    session = Session(m.port)
    try:
        assert "2 workers" in session.banner
        listed = session.run("workers")
        rows = [line.split() for line in listed.splitlines()[1:] if line.split()[0].isdigit()]
        assert {int(row[1]) for row in rows} == {first, second}
        assert all(row[2] == "ready" for row in rows)

        assert sleepers(session.run("ps")) == {first: 1, second: 1}
        assert "error" in session.run("info 1")  # pid 1 is in both workers: ambiguous
        assert f"worker {second}" in session.run(f"info {second}:1")

        answer = session.run(f"kill {second}:1")
        assert f"worker {second}: pid 1: killed" in answer
        assert sleepers(session.run("ps")) == {first: 1}
        page = json.loads(session.run("ps --json"))
        assert {p["worker"] for p in page["processes"]} == {first}
    finally:
        session.close()

    # Every worker's console is a 0600 socket in a 0700 directory of the master's.
    runtime = Path(m.logged(r"console on /")[0].split("console on ")[1]).parent
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    for pid in (first, second):
        assert stat.S_IMODE((runtime / f"{pid}.sock").stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_workers_that_drop_to_a_user_still_have_their_consoles(
    master: Callable[..., Master],
) -> None:
    m = master(2, "asyncio", "--user", "nobody")
    first, second = m.ready(2)
    session = Session(m.port)
    try:
        assert sleepers(session.run("ps")) == {first: 1, second: 1}
    finally:
        session.close()
    runtime = Path(m.logged(r"console on /")[0].split("console on ")[1]).parent
    assert runtime.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700


def test_the_master_console_answers_while_a_worker_does_not(
    master: Callable[..., Master],
) -> None:
    m = master(2)
    first, second = m.ready(2)
    session = Session(m.port)
    os.kill(first, signal.SIGSTOP)
    try:
        listed = session.run("workers")
        row = next(line for line in listed.splitlines() if f" {first} " in line)
        assert "not answering" in row
        ps = session.run("ps")
        assert sleepers(ps) == {second: 1}
        assert f"worker {first} (place 1): not answering" in ps
    finally:
        os.kill(first, signal.SIGCONT)
        session.close()


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def tcp_inodes(port: int) -> set[int]:
    """The inodes of the TCP sockets on local port ``port`` (listening or connected)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(int(fields[9]))
    return found


def test_a_worker_forked_during_a_session_holds_none_of_the_master_console(
    master: Callable[..., Master],
) -> None:
    m = master(2)
    before = m.ready(2)
    session = Session(m.port)
    try:
        session.run("ps")  # the master console has talked to the workers' consoles
        os.kill(before[0], signal.SIGKILL)  # the replacement is forked during the session
        wait_for(lambda: len(set(m.workers()) - set(before)) == 1, 10)
        (fresh,) = set(m.workers()) - set(before)
        console = tcp_inodes(m.port)
        assert len(console) >= 2  # the listening socket and this session
        assert not socket_inodes(fresh) & console
        session.sock.sendall(b"quit\n")
        session.sock.settimeout(5)
        data = b""
        while chunk := session.sock.recv(65536):  # the end comes, not a timeout
            data += chunk
        assert b"bye" in data
    finally:
        session.close()


def test_stop_from_the_master_console_stops_the_service(master: Callable[..., Master]) -> None:
    m = master(2)
    workers = m.ready(2)
    session = Session(m.port)
    try:
        assert "stopping" in session.run("stop")
    finally:
        session.close()
    assert m.proc.wait(20) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_archangel_status_names_the_master_console(master: Callable[..., Master]) -> None:
    m = master(2)
    m.ready(2)
    port = m.port
    status = subprocess.run(
        [sys.executable, "-m", "archangel", "status", "--pidfile", str(m.pidfile)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert status.returncode == 0, status.stderr
    assert f"console: 127.0.0.1:{port}" in status.stdout.splitlines()
    m.proc.terminate()
    assert m.proc.wait(20) == 0
    assert not Path(f"{m.pidfile}.console.json").exists()


def test_the_master_state_dump_names_every_worker_and_its_processes(
    master: Callable[..., Master],
) -> None:
    m = master(2)
    workers = m.ready(2)
    state = m.tmp / "state.json"
    os.kill(m.proc.pid, signal.SIGUSR2)

    def complete() -> bool:  # written at once; then again by the console, with the processes
        try:
            dump = json.loads(state.read_text())
        except (OSError, ValueError):
            return False
        return all("processes" in worker for worker in dump["workers"])

    wait_for(complete, 10)
    dump = json.loads(state.read_text())
    assert dump["master"]["pid"] == m.proc.pid
    assert [w["pid"] for w in dump["workers"]] == workers
    for worker in dump["workers"]:
        assert [p["name"] for p in worker["processes"]] == ["sleeper"]
        assert worker["state_file"] == per_worker_path(str(state), worker["pid"])
    wait_for(lambda: all(Path(w["state_file"]).exists() for w in dump["workers"]), 10)
    for worker in dump["workers"]:  # and each worker's own dump
        own = json.loads(Path(worker["state_file"]).read_text())
        assert [p["name"] for p in own["processes"]] == ["sleeper"]


def test_archangel_signal_ttin_and_ttou(master: Callable[..., Master]) -> None:
    m = master(2)
    m.ready(2)

    def signal_(name: str) -> subprocess.CompletedProcess[str]:
        argv = ["-m", "archangel", "signal", "--pidfile", str(m.pidfile), name]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)

    done = signal_("ttin")
    assert done.returncode == 0, done.stderr
    assert f"sent SIGTTIN to pid {m.proc.pid}" in done.stdout
    wait_for(lambda: len(m.workers()) == 3, 15)
    assert signal_("SIGTTOU").returncode == 0
    wait_for(lambda: len(m.workers()) == 2, 15)


def test_archangel_signal_ttin_refuses_a_service_without_workers(
    master: Callable[..., Master],
) -> None:
    m = master(1)  # one worker: the App runs in the process itself
    m.port  # noqa: B018 - its console listens: it runs
    argv = ["-m", "archangel", "signal", "--pidfile", str(m.pidfile), "ttin"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert f"pid {m.proc.pid} ({m.pidfile}) runs none: it would" in done.stderr
    with open(f"/proc/{m.proc.pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] != "T"  # not stopped by SIGTTIN
