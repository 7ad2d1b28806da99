"""Tests for archangel.service.systemd against real sockets and real child processes.

The notify socket is a real AF_UNIX datagram socket the test binds; socket
activation hands real listening sockets to a real child at fd 3 and up, the
way systemd does, and talks to it over 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archangel.errors import InvalidArgument
from archangel.service import systemd
from archangel.service.systemd import Watchdog
from tests.conftest import VirtualClockLoop

ENV_VARS = (
    "NOTIFY_SOCKET",
    "INVOCATION_ID",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd, with $NOTIFY_SOCKET pointing at it."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram queued right now, without waiting."""
    received = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            received.append(sock.recv(4096))
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(timeout)


# --- notify ------------------------------------------------------------------


def test_not_under_systemd_nothing_is_sent() -> None:
    assert not systemd.under_systemd()
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False
    assert systemd.watchdog_ping() is False


@pytest.mark.parametrize("variable", ["NOTIFY_SOCKET", "INVOCATION_ID"])
def test_under_systemd(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "x")
    assert systemd.under_systemd()


@pytest.mark.parametrize(
    ("send", "datagram"),
    [
        (lambda: systemd.ready(), b"READY=1"),
        (lambda: systemd.ready("serving on :8080"), b"READY=1\nSTATUS=serving on :8080"),
        (lambda: systemd.stopping(), b"STOPPING=1"),
        (lambda: systemd.stopping("draining"), b"STOPPING=1\nSTATUS=draining"),
        (lambda: systemd.status("3 clients"), b"STATUS=3 clients"),
        (lambda: systemd.status("two\nlines"), b"STATUS=two lines"),
        (lambda: systemd.watchdog_ping(), b"WATCHDOG=1"),
        (lambda: systemd.notify("STATUS=a", "ERRNO=5"), b"STATUS=a\nERRNO=5"),
    ],
    ids=[
        "ready",
        "ready-status",
        "stopping",
        "stopping-status",
        "status",
        "newline",
        "ping",
        "raw",
    ],
)
def test_notify_sends_exact_datagrams(
    notify_socket: socket.socket, send: object, datagram: bytes
) -> None:
    assert send() is True  # type: ignore[operator]
    assert notify_socket.recv(4096) == datagram
    assert drain(notify_socket) == []


def test_reloading_carries_the_monotonic_clock(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", notify_socket.recv(4096))
    assert match is not None
    assert before <= int(match[1]) <= after


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"archangel-test-{os.getpid()}-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready() is True
        assert sock.recv(4096) == b"READY=1"


def test_unset_environment_removes_notify_socket(notify_socket: socket.socket) -> None:
    assert systemd.notify("READY=1", unset_environment=True) is True
    assert "NOTIFY_SOCKET" not in os.environ
    assert notify_socket.recv(4096) == b"READY=1"
    assert systemd.notify("STATUS=later") is False


def test_nothing_to_send_sends_nothing(notify_socket: socket.socket) -> None:
    assert systemd.notify() is False
    assert drain(notify_socket) == []


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("{tmp}/nobody-listens", "could not notify systemd at {tmp}/nobody-listens"),
        ("relative/path", "NOTIFY_SOCKET='relative/path' is not a Unix socket"),
        ("vsock:2:1234", "NOTIFY_SOCKET='vsock:2:1234' is not a Unix socket"),
    ],
)
def test_send_errors_are_logged_never_raised(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    value: str,
    logged: str,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value.format(tmp=tmp_path))
    assert systemd.ready() is False
    assert logged.format(tmp=tmp_path) in caplog.text


# --- watchdog ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        (None, None, None),
        ("100000", None, 0.05),
        ("30000000", "self", 15.0),
        ("100000", "1", None),
        ("0", None, None),
        ("soon", None, None),
        ("-5", None, None),
    ],
    ids=["unset", "usec", "our-pid", "other-pid", "zero", "garbage", "negative"],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, interval: float | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert systemd.watchdog_interval() == interval


async def test_watchdog_pings_at_half_the_timeout(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch, clock: VirtualClockLoop
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 100 ms: a ping every 50 ms
    dog = Watchdog()
    assert dog.start() is True
    try:
        assert dog.running
        assert re.fullmatch(r"<Watchdog every 0.05s pings=1 \[running\]>", repr(dog))
        await clock.advance(0.525)
        pings = drain(notify_socket)
    finally:
        dog.stop()
    assert pings == [b"WATCHDOG=1"] * 11  # one at start, then one per 50 ms
    assert dog.pings == 11


def ping_times(monkeypatch: pytest.MonkeyPatch, clock: VirtualClockLoop) -> list[float]:
    """Record when each watchdog ping is sent (it is still sent), from now."""
    times: list[float] = []
    start, ping = clock.time(), systemd.watchdog_ping

    def recorded() -> bool:
        times.append(round(clock.time() - start, 6))
        return ping()

    monkeypatch.setattr(systemd, "watchdog_ping", recorded)
    return times


async def test_a_blocked_loop_stops_the_pings(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch, clock: VirtualClockLoop
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    times = ping_times(monkeypatch, clock)
    dog = Watchdog()
    dog.start()
    try:
        await clock.advance(0.12)
        assert len(drain(notify_socket)) == 3
        clock.stall(0.3)  # the loop is blocked from 0.12 to 0.42: six pings missed
        assert drain(notify_socket) == []
        await clock.advance(0.12)
        resumed = drain(notify_socket)
    finally:
        dog.stop()
    # One ping as soon as the loop runs again, then the cadence resumes on the
    # grid start + k * 50 ms: no burst, and no drift from the stall.
    assert times == [0.0, 0.05, 0.1, 0.42, 0.45, 0.5]
    assert len(resumed) == 3


async def test_watchdog_stop_is_idempotent_and_restartable(
    notify_socket: socket.socket, clock: VirtualClockLoop
) -> None:
    dog = Watchdog(interval=0.02)  # explicit interval: no WATCHDOG_USEC needed
    dog.start()
    assert dog.start() is True  # already running: a no-op
    await clock.advance(0.05)
    dog.stop()
    dog.stop()
    assert not dog.running
    assert dog.pings == 3  # at 0, 0.02, 0.04
    assert repr(dog) == "<Watchdog pings=3 [idle]>"
    drain(notify_socket)
    await clock.advance(0.1)
    assert drain(notify_socket) == []
    dog.start(clock)
    dog.stop()
    assert drain(notify_socket) == [b"WATCHDOG=1"]


async def test_watchdog_without_a_watchdog_does_nothing() -> None:
    dog = Watchdog()
    assert dog.start() is False
    assert not dog.running
    dog.stop()


@pytest.mark.parametrize("interval", [0, -1.0])
def test_watchdog_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(InvalidArgument, match="watchdog interval must be positive"):
        Watchdog(interval=interval)


# --- socket activation -------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "remaining"),
    [
        ({"LISTEN_PID": "1", "LISTEN_FDS": "2"}, {}),
        ({"LISTEN_FDS": "2"}, {}),
        ({"LISTEN_PID": "self", "LISTEN_FDS": "two"}, {}),
        ({"LISTEN_PID": "self", "LISTEN_FDS": "0"}, {}),
    ],
    ids=["other-pid", "no-pid", "garbage-count", "zero"],
)
def test_listen_fds_without_sockets_for_us(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], remaining: dict[str, str]
) -> None:
    for key, value in environment.items():
        monkeypatch.setenv(key, str(os.getpid()) if value == "self" else value)
    assert systemd.listen_fds(unset_environment=False) == []
    assert {k: v for k, v in os.environ.items() if k.startswith("LISTEN_")}.keys() == (
        environment.keys()
    )
    assert systemd.listen_sockets() == {}
    assert not any(key.startswith("LISTEN_") for key in os.environ)


# Puts the inherited descriptors at 3, 4, ... and sets LISTEN_* as systemd
# does, then execs the server: the same PID, so LISTEN_PID matches it.
SPAWNER = """
import fcntl, os, sys
server, loop, names, listen_pid, *fds = sys.argv[1:]
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(int(fd))
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(high))
os.environ["LISTEN_PID"] = str(os.getpid()) if listen_pid == "self" else listen_pid
if names != "-":
    os.environ["LISTEN_FDNAMES"] = names
os.execv(sys.executable, [sys.executable, server, loop])
"""

SERVER = """
import asyncio, functools, json, os, socket, sys
from archangel.service import systemd
sockets = systemd.listen_sockets()
print(json.dumps({
    "names": {name: [s.fileno() for s in group] for name, group in sockets.items()},
    "inheritable": [os.get_inheritable(s.fileno()) for g in sockets.values() for s in g],
    "listening": [s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for g in sockets.values()
                  for s in g],
    "environment": sorted(key for key in os.environ if key.startswith("LISTEN_")),
}), flush=True)

async def main():
    left = sum(len(group) for group in sockets.values())
    done = asyncio.Event()

    async def answer(name, reader, writer):
        nonlocal left
        line = await reader.readline()
        writer.write(f"{name} {os.getpid()} ".encode() + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        left -= 1
        if not left:
            done.set()

    servers = [
        await asyncio.start_server(functools.partial(answer, name), sock=sock)
        for name, group in sockets.items() for sock in group
    ]
    if servers:
        await done.wait()
    for server in servers:
        server.close()
        await server.wait_closed()

if sys.argv[1:] == ["uvloop"]:
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def activate(
    tmp_path: Path, count: int, names: str, listen_pid: str = "self", loop: str = "asyncio"
) -> tuple[subprocess.Popen[str], list[int], dict[str, object]]:
    """Start the server socket-activated with `count` listening sockets on 127.0.0.1."""
    spawner, server = tmp_path / "spawner.py", tmp_path / "server.py"
    spawner.write_text(SPAWNER)
    server.write_text(SERVER)
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        fds = [str(sock.fileno()) for sock in listeners]
        proc = subprocess.Popen(
            [sys.executable, str(spawner), str(server), loop, names, listen_pid, *fds],
            pass_fds=[sock.fileno() for sock in listeners],
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ENV_VARS},
        )
        ports = [sock.getsockname()[1] for sock in listeners]
    finally:
        for sock in listeners:
            sock.close()  # the child holds its own copies now
    assert proc.stdout is not None
    report = json.loads(proc.stdout.readline())
    return proc, ports, report


def ask(port: int, line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(line)
        return b"".join(iter(lambda: conn.recv(4096), b""))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_socket_activated_child_serves_on_inherited_sockets(tmp_path: Path, loop: str) -> None:
    proc, ports, report = activate(tmp_path, 2, "http:admin", loop=loop)
    try:
        assert report == {
            "names": {"http": [3], "admin": [4]},
            "inheritable": [False, False],  # CLOEXEC set: not leaked to the child's children
            "listening": [1, 1],
            "environment": [],  # unset, so the child's children do not claim them
        }
        assert ask(ports[0], b"hello\n") == f"http {proc.pid} hello\n".encode()
        assert ask(ports[1], b"status\n") == f"admin {proc.pid} status\n".encode()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.wait()


@pytest.mark.parametrize(
    ("names", "listen_pid", "expected"),
    [
        ("-", "self", {"unknown": [3, 4]}),
        ("http", "self", {"http": [3], "unknown": [4]}),
        ("http:admin", "1", {}),
    ],
    ids=["unnamed", "too-few-names", "not-our-pid"],
)
def test_socket_activation_names_and_pid(
    tmp_path: Path, names: str, listen_pid: str, expected: dict[str, list[int]]
) -> None:
    proc, ports, report = activate(tmp_path, 2, names, listen_pid)
    try:
        assert report["names"] == expected
        assert report["environment"] == []
        if expected:
            for port in ports:
                assert ask(port, b"x\n").endswith(b" x\n")
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.wait()
