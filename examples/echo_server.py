"""An echo server whose every connection is a process.

Run it, then talk to it and watch the process table::

    python examples/echo_server.py            # listens on 127.0.0.1:8888
    printf 'hello\\n' | nc -q1 127.0.0.1 8888

Every few seconds it prints ``ps``; Ctrl-C shuts the manager down gracefully
(every connection's at-exit hook runs) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import archangel


class Echo(archangel.Process, asyncio.Protocol):
    """Echoes what it receives; logs its own exit through an at-exit hook."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.at_exit(print, f"pid {self.pid} exited")

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main(host: str, port: int, seconds: float | None) -> None:
    loop = asyncio.get_running_loop()
    manager = archangel.ProcessManager()
    server = await loop.create_server(manager.register(Echo), host, port)
    print(f"echo server on {host}:{server.sockets[0].getsockname()[1]}", flush=True)

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if seconds is not None:
        loop.call_later(seconds, stop.set)

    async def report() -> None:
        while True:
            await asyncio.sleep(2)
            rows = [f"{p.pid}:{p.name}:{p.state.value}" for p in manager.ps()]
            print(f"ps: {len(rows)} running {' '.join(rows[:10])}", flush=True)

    reporter = manager.spawn(report, name="reporter")
    await stop.wait()
    server.close()
    reporter.kill()
    await manager.shutdown(timeout=5)
    await server.wait_closed()
    print(f"stopped: {manager.counters}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="archangel echo server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port, args.seconds))
