"""``App.serve`` under systemd socket activation: the inherited sockets as systemd made them.

A real child process gets two listening sockets at fds 3 and 4 (as systemd
passes them, with ``LISTEN_FDNAMES``), each with its own listen backlog, and
serves them with ``serve`` and ``serve_websockets``; a name it was not given
is refused. The test keeps its own copies of the sockets, so it reads the
backlogs the kernel holds for them (``tcp_info``, what ``ss -ltn`` shows as
Send-Q) while the child serves them.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_systemd import ENV_VARS, SPAWNER

ROOT = Path(__file__).resolve().parent.parent

SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from archangel import App, InvalidArgument, State

    async def lines(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    app = App("activated", shutdown_timeout=5)

    @app.bus.on(State.START)
    async def start():
        try:
            await app.serve_streams(lines, "127.0.0.1", 0, fd_name="api")
        except InvalidArgument as exc:
            print("refused:", exc, flush=True)
        web = await app.serve_streams(lines, "127.0.0.1", 1, fd_name="web")  # port 1: never bound
        ws = await app.serve_websockets(echo, "127.0.0.1", 1, fd_name="ws")
        print("serving", web.sockets[0].getsockname()[1], ws.sockets[0].getsockname()[1],
              flush=True)

    sys.exit(app.run(loop=sys.argv[1]))
    """
)

TCP_LISTEN = 10


def backlog(sock: socket.socket) -> int:
    """A listening TCP socket's backlog: ``tcpi_sacked`` of its ``tcp_info``, on Linux."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    assert info[0] == TCP_LISTEN
    return int(struct.unpack_from("=8x6I", info)[5])


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_inherited_sockets_keep_their_backlog_and_unknown_names_are_refused(
    tmp_path: Path, loop: str
) -> None:
    spawner, service = tmp_path / "spawner.py", tmp_path / "service.py"
    spawner.write_text(SPAWNER)
    service.write_text(SERVICE)
    web = socket.create_server(("127.0.0.1", 0), backlog=777)
    ws = socket.create_server(("127.0.0.1", 0), backlog=555)
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["PYTHONPATH"] = str(ROOT / "src")
    fds = [web.fileno(), ws.fileno()]
    child = subprocess.Popen(
        [sys.executable, str(spawner), str(service), loop, "web:ws", "self", *map(str, fds)],
        pass_fds=fds,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        refused = child.stdout.readline()
        assert refused == (
            "refused: app 'activated': fd_name 'api' matches no inherited socket left; "
            "socket activation passed 'web' (1 left), 'ws' (1 left) "
            "(FileDescriptorName= in the .socket unit names them)\n"
        )
        ports = [web.getsockname()[1], ws.getsockname()[1]]
        assert child.stdout.readline() == f"serving {ports[0]} {ports[1]}\n"
        # Listening again did not reset them to asyncio's default of 100.
        assert (backlog(web), backlog(ws)) == (777, 555)
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as conn:
            conn.sendall(b"hello\n")
            assert conn.recv(100) == b"hello\n"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0
    finally:
        web.close()
        ws.close()
        if child.poll() is None:
            child.kill()
        _, stderr = child.communicate()
    assert "Traceback" not in stderr, stderr
