"""Prefork workers: one shared listening socket, or one SO_REUSEPORT socket per worker?

The choice behind ``App.run(workers=N)`` (see ``docs/workers.rst``), measured::

    python benchmarks/workers.py [--workers 2] [--seconds 5] [--rounds 3]

Every variant runs ``--workers`` forked workers on uvloop answering a tiny
HTTP response and closing the connection, loaded by ``wrk`` with
``Connection: close`` (so every request is a new connection: what is balanced
is the accept), one ``wrk`` thread on its own core:

shared
    One socket bound and listening before the fork; every worker accepts
    from it (what the master hands the workers through its broker).
reuseport
    Each worker binds its own socket with ``SO_REUSEPORT``; the kernel
    spreads new connections over them by a hash of the addresses.
archangel
    ``App.run(workers=N)`` itself (the shared socket, through the broker),
    every connection a process of the worker's manager.

Printed per variant: requests per second, server CPU (user + system of all
workers) per request, the share of the connections each worker took. Then a
*roll* per mechanism: a client connecting without pause while a fresh worker
starts and an old one closes its listener and exits, as HUP does, counting
the connections refused or reset (target 0).

On a machine with more cores, raise ``--workers`` and ``wrk``'s threads
(``--client-threads``) and compare requests per second with 1 worker and
with N: the scaling target is N workers >= 0.9 x N x one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Http(asyncio.Protocol):
    """Answer one request and close; count it."""

    count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data:
            Http.count += 1
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]
            self.transport.close()


def _worker(sock: socket.socket | None, port: int, report: int) -> None:
    """A forked worker: serve until SIGTERM, then write its count to ``report``."""
    import uvloop

    loop = uvloop.new_event_loop()
    if sock is None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
    server = loop.run_until_complete(loop.create_server(Http, sock=sock, backlog=1024))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.run_until_complete(stop.wait())
    server.close()  # stop accepting: a roll's old worker
    loop.run_until_complete(asyncio.sleep(0.2))
    os.write(report, f"{os.getpid()} {Http.count}\n".encode())
    os._exit(0)


class Plain:
    """N forked workers on the shared socket or on SO_REUSEPORT sockets."""

    def __init__(self, mode: str, workers: int) -> None:
        self.mode = mode
        self.shared: socket.socket | None = None
        if mode == "shared":
            self.shared = socket.socket()
            self.shared.bind(("127.0.0.1", 0))
            self.shared.listen(1024)
            self.port = self.shared.getsockname()[1]
        else:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
            probe.close()
        self.read, self.write = os.pipe()
        self.pids = [self.fork() for _ in range(workers)]

    def fork(self) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                _worker(self.shared, self.port, self.write)
            finally:
                os._exit(1)
        return pid

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"{self.mode}: workers not listening")

    def stop(self, pids: list[int] | None = None) -> dict[int, int]:
        pids = self.pids if pids is None else pids
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        counts = {}
        with os.fdopen(os.dup(self.read)) as f:
            for _ in pids:
                pid, count = f.readline().split()
                counts[int(pid)] = int(count)
        for pid in pids:
            os.waitpid(pid, 0)
        return counts


ARCHANGEL = textwrap.dedent(
    """
    import asyncio, os, sys
    from archangel import App, State
    app = App("bench-workers", shutdown_timeout=5)
    count = 0
    async def handle(reader, writer):
        global count
        try:
            await reader.readuntil(b"\\r\\n\\r\\n")
        except asyncio.IncompleteReadError:
            return  # wrk closing its connections at the end
        count += 1
        writer.write(RESPONSE_HERE)
    @app.bus.on(State.START)
    async def start():
        server = await app.serve_streams(handle, "127.0.0.1", int(sys.argv[2]))
    @app.bus.on(State.EXIT)
    def report():
        print(f"{os.getpid()} {count}", flush=True)
    sys.exit(app.run(workers=int(sys.argv[1])))
    """
).replace("RESPONSE_HERE", repr(RESPONSE))


def cpu_of(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def wrk(port: int, seconds: float, threads: int, conns: int) -> float:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{seconds:g}s",
            "-H",
            "Connection: close",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise SystemExit(f"wrk said:\n{out}")
    return float(match.group(1))


def measure(mode: str, args: argparse.Namespace) -> tuple[float, float, list[float]]:
    """One round of ``mode``: (requests/s, CPU ms per request, shares)."""
    if mode == "archangel":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        script = Path("/tmp/archangel-bench-workers.py")
        script.write_text(ARCHANGEL)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        master = subprocess.Popen(
            [sys.executable, str(script), str(args.workers), str(port)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 10
        # workers=1 is no master: the App runs in the process itself.
        forked = args.workers > 1
        while (forked and len(children(master.pid)) < args.workers) or not _answers(port):
            if time.monotonic() > deadline:
                raise SystemExit("archangel workers did not start")
            time.sleep(0.05)
        pids = children(master.pid) if forked else [master.pid]
        before = cpu_of(pids)
        rate = wrk(port, args.seconds, args.client_threads, args.connections)
        used = cpu_of(pids) - before
        master.send_signal(signal.SIGTERM)
        out, _ = master.communicate(timeout=20)
        # "PID COUNT" per worker; anything else on the master's stdout is not ours.
        rows = [line.split() for line in out.splitlines()]
        counts = [int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()]
        if len(counts) != args.workers:
            raise SystemExit(f"expected {args.workers} worker counts, got: {out!r}")
    else:
        plain = Plain(mode, args.workers)
        plain.wait_listening()
        before = cpu_of(plain.pids)
        rate = wrk(plain.port, args.seconds, args.client_threads, args.connections)
        used = cpu_of(plain.pids) - before
        counts = list(plain.stop().values())
    total = sum(counts) or 1
    return rate, 1000 * used / (rate * args.seconds), [c / total for c in counts]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP")
    except OSError:
        return False


def roll(mode: str, seconds: float = 2.0) -> tuple[int, int]:
    """Roll the workers under a connecting client: (connections served, failed)."""
    plain = Plain(mode, 2)
    plain.wait_listening()
    served = failed = 0
    done = threading.Event()

    def client() -> None:
        nonlocal served, failed
        while not done.is_set():
            try:
                with socket.create_connection(("127.0.0.1", plain.port), timeout=2) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
                    if sock.recv(100).startswith(b"HTTP"):
                        served += 1
                    else:
                        failed += 1
            except OSError:
                failed += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # roll one worker after another
        old = plain.pids.pop(0)
        plain.pids.append(plain.fork())
        time.sleep(0.1)  # the fresh one is listening
        plain.stop([old])
    done.set()
    for t in threads:
        t.join()
    plain.stop()
    return served, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client-threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    modes = ("shared", "reuseport", "archangel")
    results: dict[str, list[tuple[float, float, list[float]]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes[r % 3 :] + modes[: r % 3]:
            results[mode].append(measure(mode, args))
    print(
        f"{args.workers} workers, wrk -t{args.client_threads} -c{args.connections}, "
        f"Connection: close, {args.rounds} rounds of {args.seconds:g} s (median round)"
    )
    for mode in modes:
        rounds = sorted(results[mode], key=lambda x: x[0])
        rate, cpu, shares = rounds[len(rounds) // 2]
        worst = max(max(s) for _, _, s in rounds)
        print(
            f"  {mode:10} {rate:9.0f} req/s  {cpu * 1000:6.1f} us CPU/req  "
            f"shares {' '.join(f'{s:.0%}' for s in sorted(shares))}  "
            f"(largest share in any round {worst:.0%})"
        )
    for mode in ("shared", "reuseport"):
        served, failed = roll(mode)
        print(f"  roll {mode:10} {served} connections served, {failed} refused or reset")


if __name__ == "__main__":
    main()
