"""The echo benchmark's servers: a raw uvloop echo protocol, the same code managed, a floor.

``python benchmarks/echo.py --serve raw|managed|floor`` runs :func:`serve` in
a subprocess of its own, one per round (see ``echo.py``): it prints the port,
serves until SIGINT, SIGTERM or EOF on its stdin, and the managed server then
prints the manager's counters, which ``echo.py`` checks against the
connections the client completed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import archangel

#: How long a managed server waits, once stopped, for EOFs still in flight.
DRAIN = 2.0


class RawEcho(asyncio.Protocol):
    """The baseline: a plain uvloop echo protocol."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoProcess(archangel.Process, asyncio.Protocol):
    """The same echo code; inheriting the mixin makes each connection a process."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class FloorEcho(RawEcho):
    """The ``--floor`` reference: the least tracking any Python code can do.

    A PID and a table entry, made by a Python factory and dropped by a Python
    ``connection_lost`` (which replaces the baseline's no-op one): no state,
    no timestamps, no hooks, no history, no counters. What this costs per
    connection, no pure-Python process manager can avoid.
    """

    pid = 0
    table: ClassVar[dict[int, FloorEcho]] = {}

    def connection_lost(self, exc: Exception | None) -> None:
        del self.table[self.pid]


_floor_pids = itertools.count(1)


def floor_factory() -> FloorEcho:
    protocol = FloorEcho()
    protocol.pid = pid = next(_floor_pids)
    FloorEcho.table[pid] = protocol
    return protocol


async def serve(variant: str, host: str) -> None:
    """Serve until SIGINT/SIGTERM or EOF on stdin; print the port, then the counters."""
    loop = asyncio.get_running_loop()
    manager = archangel.ProcessManager() if variant == "managed" else None
    factory: Callable[[], asyncio.Protocol]
    if manager is not None:
        factory = manager.register(EchoProcess)
    else:
        factory = floor_factory if variant == "floor" else RawEcho
    server = await loop.create_server(factory, host, 0, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:  # EOF: the parent is done with us (or gone)
        if not os.read(stdin, 4096):
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, on_stdin)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.close()
    if manager is not None:
        deadline = loop.time() + DRAIN
        while len(manager) and loop.time() < deadline:  # EOFs still in flight
            await asyncio.sleep(0.01)
        print("counters", json.dumps(manager.counters), flush=True)
