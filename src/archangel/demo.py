"""The demo service: an echo server on 127.0.0.1 whose connections are processes.

It prints the process table every few seconds and stops cleanly on Ctrl-C
(SIGINT) or SIGTERM: the listener closes first, then every connection is
stopped gracefully and its at-exit hooks run. Try it::

    archangel demo            # then, in another terminal:
    printf 'hello\\n' | nc -q1 127.0.0.1 8888
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from .manager import ProcessManager
from .process import Process

__all__ = ["DemoEcho", "run", "serve"]


class DemoEcho(Process, asyncio.Protocol):
    """Echoes every byte back."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _print_ps(manager: ProcessManager) -> None:
    rows = manager.ps()
    print(f"--- {len(rows)} running, counters {_short(manager.counters)}", flush=True)
    print(f"{'PID':>6} {'KIND':6} {'STATE':8} {'NAME':16} DETAILS", flush=True)
    for info in rows[:20]:
        details = " ".join(f"{k}={v}" for k, v in info.details.items())
        print(
            f"{info.pid:>6} {info.kind:6} {info.state.value:8} {info.name:16} {details}",
            flush=True,
        )
    if len(rows) > 20:
        print(f"   ... and {len(rows) - 20} more", flush=True)


def _short(counters: dict[str, Any]) -> str:
    return " ".join(f"{k}={counters[k]}" for k in ("started", "exited", "killed", "failed"))


async def serve(port: int, interval: float, seconds: float | None) -> int:
    """Run the demo on the running loop until SIGINT/SIGTERM or ``seconds``."""
    loop = asyncio.get_running_loop()
    manager = ProcessManager(name="demo")
    server = await loop.create_server(manager.register(DemoEcho), "127.0.0.1", port)
    address = server.sockets[0].getsockname()
    print(f"archangel demo: echo server on {address[0]}:{address[1]}", flush=True)
    print(f"  try: printf 'hello\\n' | nc -q1 {address[0]} {address[1]}", flush=True)
    print("  Ctrl-C stops it cleanly", flush=True)

    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if seconds is not None:
        loop.call_later(seconds, stop.set)

    async def report() -> None:
        while True:
            _print_ps(manager)
            await asyncio.sleep(interval)

    manager.spawn(report, name="ps-printer")
    await stop.wait()
    print("stopping: no longer accepting, draining connections", flush=True)
    server.close()
    await manager.shutdown(timeout=5)
    await server.wait_closed()
    print(f"stopped cleanly: {_short(manager.counters)}", flush=True)
    return 0


def run(
    port: int = 8888, interval: float = 5.0, seconds: float | None = None, loop: str = "uvloop"
) -> int:
    """Run the demo to completion; returns the exit status."""
    try:
        if loop == "uvloop":
            import uvloop

            return uvloop.run(serve(port, interval, seconds))
        return asyncio.run(serve(port, interval, seconds))
    except OSError as exc:
        print(
            f"archangel demo: cannot listen on 127.0.0.1:{port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:  # pragma: no cover - a signal before the handlers were set
        with contextlib.suppress(Exception):
            print("interrupted", file=sys.stderr)
        return 130
