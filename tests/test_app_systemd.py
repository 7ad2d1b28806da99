"""The App under systemd: notifications through its lifecycle, and socket activation.

A real child process runs an App on a socket it inherited at fd 3 (as systemd
passes it), and notifies a datagram socket that the test binds.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.service_helpers import gone
from tests.test_systemd import ENV_VARS, SPAWNER

ROOT = Path(__file__).resolve().parent.parent

SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from archangel import App, Process, State

    class Echo(Process, asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(b"%d:" % self.pid + data)

    app = App("activated", shutdown_timeout=5)

    @app.bus.on(State.START)
    async def start():
        server = await app.serve(Echo, "127.0.0.1", 1, fd_name="web")  # port 1: never bound
        print("serving", server.sockets[0].getsockname()[1], flush=True)

    sys.exit(app.run(loop=sys.argv[1]))
    """
)


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_app_notifies_and_serves_an_inherited_socket(tmp_path: Path, loop: str) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    spawner, service = tmp_path / "spawner.py", tmp_path / "service.py"
    spawner.write_text(SPAWNER)
    service.write_text(SERVICE)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), PYTHONPATH=str(ROOT / "src"))
    child = subprocess.Popen(
        [sys.executable, str(spawner), str(service), loop, "web", "self", str(listener.fileno())],
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    listener.close()  # the child has its own copy, at fd 3
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == f"serving {port}\n"  # the inherited one, not port 1
        ready = receive(notify)
        assert ready.startswith("READY=1\nSTATUS=activated: running, 1 servers")

        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"hello")
            assert conn.recv(100) == b"1:hello"  # a managed process, PID 1

            child.send_signal(signal.SIGHUP)
            reloading = receive(notify).split("\n")
            assert reloading[0] == "RELOADING=1"
            assert reloading[1].startswith("MONOTONIC_USEC=")
            assert int(reloading[1].split("=")[1]) > 0
            assert receive(notify).startswith("READY=1")
            conn.sendall(b"again")  # the connection stayed up through the reload
            assert conn.recv(100) == b"1:again"

            child.send_signal(signal.SIGTERM)
            assert receive(notify).startswith("STOPPING=1")
            assert conn.recv(100) == b""  # drained: closed by the graceful stop
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
        notify.close()


HUP_SERVICE = textwrap.dedent(
    """
    import asyncio, logging, sys
    from archangel import App, State

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
    app = App("hup")

    async def hold(where):
        print(where, flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # until the test lets it go on

    @app.bus.on(State.START)
    async def start():
        await hold("starting")

    @app.bus.on(State.RUN)
    def running():
        print("running", flush=True)

    @app.bus.on(State.STOP)
    async def stop():
        await hold("stopping")

    @app.bus.on("reload")
    def reload():
        print("reloaded", flush=True)

    sys.exit(app.run(loop=sys.argv[1]))
    """
)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_sighup_reloads_only_in_run(tmp_path: Path, loop: str) -> None:
    """SIGHUP while starting or stopping is ignored: no RELOADING=1, no stray READY=1."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    service = tmp_path / "service.py"
    service.write_text(HUP_SERVICE)
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), PYTHONPATH=str(ROOT / "src"))
    child = subprocess.Popen(
        [sys.executable, str(service), loop],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout, lines = child.stdin, child.stdout, queue.SimpleQueue[str]()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout])
    reader.start()

    def expect(line: str) -> None:
        seen = []
        while (got := lines.get(timeout=10)) != line + "\n":
            seen.append(got)

    def go_on() -> None:
        stdin.write("\n")
        stdin.flush()

    try:
        expect("starting")
        child.send_signal(signal.SIGHUP)
        expect("hup: reload ignored in START")
        go_on()
        expect("running")
        assert receive(notify).startswith("READY=1\nSTATUS=hup: running")

        child.send_signal(signal.SIGHUP)  # in RUN: a real reload
        expect("reloaded")
        assert receive(notify).startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert receive(notify) == "READY=1"

        child.send_signal(signal.SIGTERM)
        expect("stopping")
        assert receive(notify) == "STOPPING=1"
        child.send_signal(signal.SIGHUP)
        expect("hup: reload ignored in STOP")
        go_on()
        assert child.wait(timeout=10) == 0
        notify.setblocking(False)
        with pytest.raises(BlockingIOError):
            notify.recv(4096)  # nothing more was sent
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        reader.join()
        stdin.close()
        stdout.close()
        notify.close()


ACTIVATED_DAEMON = textwrap.dedent(
    """
    import asyncio, os
    from archangel import App, Process, State

    class Echo(Process, asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(f"{os.getpid()} {listen_pid} ".encode() + data)

    app = App("activated-daemon", shutdown_timeout=5)
    listen_pid = None

    @app.bus.on(State.START)
    async def start():
        global listen_pid
        listen_pid = os.environ.get("LISTEN_PID")  # what the daemon was given
        await app.serve(Echo, "127.0.0.1", 0, fd_name="web")
    """
)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def connect_when_listening(port: int, launcher: subprocess.Popen[str]) -> socket.socket:
    """Connect once systemd-socket-activate listens (it runs the command on that connection)."""
    for _ in range(1000):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=20)
        except ConnectionRefusedError:
            assert launcher.poll() is None, launcher.communicate()
            threading.Event().wait(0.01)
    raise AssertionError(f"systemd-socket-activate never listened on port {port}")


def test_a_socket_activated_daemon_keeps_its_inherited_socket(tmp_path: Path) -> None:
    """``archangel run --daemon`` under systemd-socket-activate serves the socket it was given."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.fail("systemd-socket-activate is not installed (Debian package: systemd)")
    (tmp_path / "activated.py").write_text(ACTIVATED_DAEMON)
    pidfile, log = tmp_path / "activated.pid", tmp_path / "activated.log"
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["PYTHONPATH"] = f"{ROOT / 'src'}:{tmp_path}"
    port = free_port()
    run = ["run", "activated:app", "--daemon", f"--pidfile={pidfile}", f"--log-file={log}"]
    launcher = subprocess.Popen(
        [
            activate,
            f"--listen=127.0.0.1:{port}",
            "--fdname=web",
            sys.executable,
            "-m",
            "archangel",
            *run,
        ],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = None
    try:
        with connect_when_listening(port, launcher) as first:  # queued while the daemon starts
            first.sendall(b"first")
            _, err = launcher.communicate(timeout=30)
            logged = log.read_text() if log.exists() else ""
            assert launcher.returncode == 0, err + logged
            pid = int(pidfile.read_text())
            assert pid != launcher.pid  # it did fork
            assert f"serving on [('127.0.0.1', {port})]" in logged
            assert first.recv(100) == f"{pid} {pid} first".encode()  # LISTEN_PID: the daemon's
        with socket.create_connection(("127.0.0.1", port), timeout=20) as second:
            second.sendall(b"second")
            assert second.recv(100) == f"{pid} {pid} second".encode()
        os.kill(pid, signal.SIGTERM)
        assert gone(pid)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
