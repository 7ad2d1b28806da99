"""Helpers the service tests share (daemon, pidfile, CLI, signals): scripts in real subprocesses.

The ``run`` fixture is made available to every test module by ``conftest.py``.
"""

from __future__ import annotations

import fcntl
import os
import pwd
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
