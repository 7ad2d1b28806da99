"""A master of workers in a child process, and a raw console session: for the worker tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from archangel.service.workers import worker_pids

ROOT = Path(__file__).resolve().parent.parent
PROMPT = b"archangel> "


def wait_for(condition: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {condition}")
        time.sleep(0.02)


class Master:
    """``archangel run service:app --workers N`` in a child process, and its log."""

    def __init__(
        self, tmp: Path, workers: int, loop: str, service: str, extra: tuple[str, ...] = ()
    ) -> None:
        (tmp / "service.py").write_text(service)
        self.tmp = tmp
        self.pidfile = tmp / "service.pid"
        self.log: list[str] = []
        argv = ["-m", "archangel", "run", "service:app", "--workers", str(workers)]
        self.proc = subprocess.Popen(
            [sys.executable, *argv, "--loop", loop, "--pidfile", str(self.pidfile), *extra],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    def logged(self, pattern: str) -> list[str]:
        return [line for line in list(self.log) if re.search(pattern, line)]

    @property
    def port(self) -> int:
        wait_for(lambda: self.logged(r"console on \("), 10)
        found = re.search(r"console on \('127\.0\.0\.1', (\d+)\)", self.logged("console on")[0])
        assert found is not None
        return int(found.group(1))

    def workers(self) -> list[int]:
        return worker_pids(self.proc.pid)

    def ready(self, count: int) -> list[int]:
        """Wait until ``count`` workers are ready and each has its console; their pids."""
        wait_for(lambda: len(self.logged(r"worker \d+ \(place \d+\) ready")) >= count, 15)
        wait_for(lambda: len(self.workers()) == count, 10)
        return self.workers()

    def close(self) -> None:
        if self.proc.poll() is None:  # gracefully first: the master removes its runtime dir
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.workers():
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class Session:
    """A raw socket on the console, as ``nc``: send a line, read up to the prompt."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""
        self.banner = self._answer()

    def _answer(self) -> str:
        while not self.buffer.endswith(PROMPT):
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"the console closed the session after {self.buffer!r}")
            self.buffer += data
        text, self.buffer = self.buffer[: -len(PROMPT)], b""
        text = re.sub(rb"\xff[\xfb-\xfe].|\xff\xfa.*?\xff\xf0", b"", text, flags=re.S)
        return text.decode().replace("\r\n", "\n")

    def run(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self._answer()

    def close(self) -> None:
        self.sock.close()
