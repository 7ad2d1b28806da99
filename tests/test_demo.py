"""``python -m archangel demo`` as a user runs it: it answers on its port and its console."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_until(conn: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    conn.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_demo_serves_echo_pipeline_and_console_then_stops_on_ctrl_c() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "archangel", "demo", "--port=0", "--console-port=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert demo.stdout is not None
        banner = ""
        while "Ctrl-C" not in banner:
            line = demo.stdout.readline()
            assert line, f"demo ended early: {banner}"
            banner += line
        echo_port = int(re.search(r"echo server on 127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        console_port = int(re.search(r"archangel console 127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]

        with socket.create_connection(("127.0.0.1", echo_port), timeout=10) as conn:
            conn.sendall(b"hello demo\n")
            assert read_until(conn, b"\n") == b"hello demo\n"

        with socket.create_connection(("127.0.0.1", console_port), timeout=10) as console:
            read_until(console, b"archangel> ")
            deadline = time.monotonic() + 10
            while True:  # the pipeline sees the echoed line through inotify
                console.sendall(b"pipes\r\n")
                answer = read_until(console, b"archangel> ").decode("utf-8", "replace")
                if "in=1 " in answer or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert "echo-log" in answer
            assert "in=1 " in answer
            console.sendall(b"ps\r\n")
            listing = read_until(console, b"archangel> ").decode("utf-8", "replace")
            assert "ps-printer" in listing
            assert "pipeline" in listing
            console.sendall(b"quit\r\n")

        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=20)
        assert demo.returncode == 0
        assert "stopped cleanly" in out
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
