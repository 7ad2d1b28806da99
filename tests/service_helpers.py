"""Helpers the service tests share (daemon, pidfile, CLI, signals): scripts in real subprocesses.

The ``run`` fixture is made available to every test module by ``conftest.py``.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SYSTEMD_VARS = ("NOTIFY_SOCKET", "INVOCATION_ID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
ENV = {key: value for key, value in os.environ.items() if key not in SYSTEMD_VARS}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing user and group needs root")


def _has_nobody() -> bool:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return False
    return True


needs_nobody = pytest.mark.skipif(not _has_nobody(), reason="no 'nobody' user on this system")


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run a Python script (dedented source) in a fresh interpreter; argv[1] is tmp_path."""

    def run(
        source: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        script = tmp_path / f"script_{len(list(tmp_path.glob('script_*')))}.py"
        script.write_text(textwrap.dedent(source))
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env={**ENV, **(env or {})},
        )

    return run


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.01)


def _locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


ROOT = Path(__file__).resolve().parent.parent


def gone(pid: int, timeout: float = 15.0) -> bool:
    """Wait until ``pid`` has exited (or is a zombie nobody reaps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


ECHO_SCRIPT = """
import asyncio, logging, os, sys
from archangel import App, Process, State

HOOKS = os.environ["HOOK_LOG"]


class Echo(Process, asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.at_exit(record, self)

    def data_received(self, data):
        self.transport.write(data)


def record(process):
    with open(HOOKS, "a") as out:
        out.write(f"{process.pid} {process.exit_reason.value}\\n")
"""


def write_script(path: Path, body: str) -> Path:
    path.write_text(ECHO_SCRIPT + textwrap.dedent(body))
    return path


def popen(script: Path, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "HOOK_LOG": str(tmp_path / "hooks")},
    )


def connect(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` connections, each echoing once: each is a process of the service."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    for conn in conns:
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
    return conns


def closed_by_peer(conn: socket.socket) -> bool:
    """Wait until the service closes (or resets) ``conn``; True once it has."""
    try:
        return conn.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        conn.close()


def hook_lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    """Wait until the at-exit hooks wrote ``count`` lines; return the lines."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


SLOW_START = """
app = App("slow-start", shutdown_timeout=5)


@app.bus.on(State.START)
async def start():
    await app.serve(Echo, "127.0.0.1", 0)
    print("port", app.addresses[0][1], flush=True)
    try:
        await asyncio.Event().wait()  # a backend that never answers
    except asyncio.CancelledError:
        print("start cancelled", flush=True)
        raise


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    sys.exit(app.run(loop=sys.argv[1]))
"""
