"""The console's own address as a running service reports it: state dump, ``archangel status``.

A real service (``archangel run --pidfile``) with a console on a port the
kernel picks; real signals, the real command line, and a raw socket to the
address reported, to show it is the one the console listens on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import archangel
from archangel.service import sidecar

#: Where the archangel under test comes from, for the subprocesses that run it.
SRC = str(Path(archangel.__file__).resolve().parent.parent)
TIMEOUT = 30.0

APP = """
import os
from archangel import App, State

def make(console):
    app = App("consoled", console=console, state_file=os.environ["TEST_STATE_FILE"])
    app.bus.subscribe(State.RUN, lambda: print("running", flush=True))
    return app

def tcp():
    return make({"port": 0})

def unix():
    return make({"path": os.environ["TEST_CONSOLE_SOCK"], "token": "s3cret"})
"""


def _env(where: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(where)])}


def _cli(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archangel", *args],
        cwd=where,
        env=_env(where),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(params=["tcp", "unix"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A service running ``console_app:<param>`` with a pidfile, until the test is done."""
    (tmp_path / "console_app.py").write_text(APP)
    pidfile, state = tmp_path / "svc.pid", tmp_path / "state.json"
    sock = tmp_path / "console.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "archangel", "run", f"console_app:{request.param}",
         "--loop=asyncio", f"--pidfile={pidfile}"],
        cwd=tmp_path,
        env={**_env(tmp_path), "TEST_STATE_FILE": str(state), "TEST_CONSOLE_SOCK": str(sock)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "running\n"
        yield {"proc": proc, "pidfile": pidfile, "state": state, "where": tmp_path, "sock": sock}
    finally:
        proc.kill()
        proc.communicate()


def _state_dump(proc: subprocess.Popen[str], path: Path) -> dict[str, Any]:
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():  # written whole, then renamed into place
        assert time.monotonic() < deadline, "no state dump after SIGUSR2"
        time.sleep(0.01)
    return dict(json.loads(path.read_text()))


def _banner(address: tuple[str, int] | str) -> bytes:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        return sock.recv(4096)


def test_status_and_the_state_dump_say_where_the_console_listens(
    service: dict[str, Any],
) -> None:
    proc, pidfile = service["proc"], service["pidfile"]
    console = _state_dump(proc, service["state"])["settings"]["console"]
    status = _cli(service["where"], "status", f"--pidfile={pidfile}")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"running: pid {proc.pid} ({pidfile})"
    if "path" in console:  # a Unix socket, with a token: said, never shown
        assert console == {
            "address": str(service["sock"]),
            "path": str(service["sock"]),
            "token": True,
        }
        assert lines[1] == f"console: unix:{service['sock']} (token required)"
        assert _banner(console["path"]) == b"token: "
        written = Path(sidecar.console_path(pidfile)).read_text()
        assert "s3cret" not in status.stdout + written
    else:
        host, port = console["host"], console["port"]
        assert port > 0 and console["address"] == [host, port] and console["token"] is False
        assert lines[1] == f"console: 127.0.0.1:{port}"  # the port the kernel picked
        assert _banner((host, port)).startswith(b"archangel console (app consoled)")
    # Gone with the service: a later status has no console to report.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 0
    assert not os.path.exists(sidecar.console_path(pidfile))


def test_a_sidecar_naming_another_pid_or_unreadable_is_ignored(tmp_path: Path) -> None:
    pidfile = tmp_path / "svc.pid"
    entry = {"address": ["127.0.0.1", 8023], "host": "127.0.0.1", "port": 8023, "token": False}
    assert sidecar.write_console(pidfile, entry)
    assert sidecar.read_console(pidfile, os.getpid()) == entry
    assert sidecar.describe_console(entry) == "127.0.0.1:8023"
    assert sidecar.read_console(pidfile, os.getpid() + 1) is None  # a service that died
    Path(sidecar.console_path(pidfile)).write_text("{not json")
    assert sidecar.read_console(pidfile, os.getpid()) is None
    sidecar.remove_console(pidfile)  # not ours any more (unreadable): left alone
    assert os.path.exists(sidecar.console_path(pidfile))
    missing = tmp_path / "no-such-dir" / "svc.pid"
    assert sidecar.write_console(missing, entry) is False  # logged, not raised
    assert sidecar.describe_console({"host": "::1", "port": 1, "token": True}) == (
        "[::1]:1 (token required)"
    )
