"""The demo service: an echo server, a tailing pipeline and the console, on 127.0.0.1.

Every echo connection is a process and appends each line it echoes to a log
file; a pipeline tails that log (inotify), parses it and counts lines per
peer; the process table is printed every few seconds; the telnet console
lists, inspects and kills the processes. Ctrl-C stops it all gracefully::

    archangel demo                                # then, in other terminals:
    printf 'hello\\n' | nc -q1 127.0.0.1 8888      # a connection comes and goes
    archangel console 127.0.0.1:8023              # ps, info 1, kill 1, pipes, help
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import tempfile
from typing import Any

from .app import App
from .bus.states import State
from .kernel.manager import ProcessManager
from .kernel.process import Process
from .pipes.cogs import Cog
from .pipes.pipeline import Pipeline
from .pipes.supplies import tail

__all__ = ["DemoEcho", "PeerCounter", "make_app", "run"]


class DemoEcho(Process, asyncio.Protocol):
    """Echoes every byte back and logs each line it echoes."""

    log: Any = None  # set by make_app: the open demo log

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        if self.log is not None:
            peer = self.transport.get_extra_info("peername") or ("?", 0)
            for line in data.decode("utf-8", "replace").splitlines():
                self.log.write(f"{peer[0]}:{peer[1]} pid={self.pid} {line}\n")
            self.log.flush()


class PeerCounter(Cog):
    """Counts the demo log's lines per peer host; passes nothing on."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, line: str) -> None:
        self.counts[line.split(":", 1)[0]] += 1


def _print_ps(manager: ProcessManager, counter: PeerCounter) -> None:
    rows = manager.ps()
    c = manager.counters
    print(
        f"--- {len(rows)} running; started={c['started']} exited={c['exited']} "
        f"killed={c['killed']} failed={c['failed']}; lines per host: {dict(counter.counts)}",
        flush=True,
    )
    for info in rows[:20]:
        details = " ".join(f"{k}={v}" for k, v in info.details.items())[:90]
        print(
            f"{info.pid:>6} {info.kind:8} {info.state.value:8} {info.name:14} {details}",
            flush=True,
        )
    if len(rows) > 20:
        print(f"   ... and {len(rows) - 20} more", flush=True)


def make_app(
    port: int = 8888,
    console_port: int = 8023,
    interval: float = 5.0,
    seconds: float | None = None,
    log_dir: str | None = None,
) -> App:
    """Build the demo App (nothing runs until ``app.run()``)."""
    app = App("demo", shutdown_timeout=5, console={"port": console_port})
    counter = PeerCounter()
    log_path = os.path.join(log_dir or tempfile.mkdtemp(prefix="archangel-demo-"), "echo.log")

    @app.bus.on(State.START, priority=40)
    def open_log() -> None:
        # A fresh log, tailed from its start: a line echoed before the pipeline's
        # first step is counted too.
        DemoEcho.log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed at EXIT

    @app.bus.on(State.START)
    async def start() -> None:
        await app.serve(DemoEcho, "127.0.0.1", port)
        app.manager.spawn(Pipeline(tail(log_path, from_start=True), counter, name="echo-log"))
        app.manager.spawn(report, name="ps-printer")
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, app.request_stop)

    @app.bus.on(State.RUN)
    def running() -> None:  # the console starts at START, after the hooks above
        host, bound = app.addresses[0][:2]
        print(f"archangel demo: echo server on {host}:{bound}", flush=True)
        print(f"  try:     printf 'hello\\n' | nc -q1 {host} {bound}", flush=True)
        if app.console is not None:
            chost, cport = app.console.address
            print(f"  console: archangel console {chost}:{cport}", flush=True)
            print(f"           (or: telnet {chost} {cport}, or nc {chost} {cport})", flush=True)
        print(f"  log:     {log_path} (tailed by the echo-log pipeline)", flush=True)
        print("  Ctrl-C stops it cleanly", flush=True)

    async def report() -> None:
        while True:
            _print_ps(app.manager, counter)
            await asyncio.sleep(interval)

    @app.bus.on(State.STOP)
    def stopping() -> None:
        print("stopping: no longer accepting; draining connections and the pipeline", flush=True)

    @app.bus.on(State.EXIT)
    def closed() -> None:
        if DemoEcho.log is not None:
            DemoEcho.log.close()
            DemoEcho.log = None
        c = app.manager.counters
        print(
            f"stopped cleanly: started={c['started']} exited={c['exited']} "
            f"killed={c['killed']} failed={c['failed']}",
            flush=True,
        )

    return app


def run(
    port: int = 8888,
    console_port: int = 8023,
    interval: float = 5.0,
    seconds: float | None = None,
    loop: str = "uvloop",
) -> int:
    """Run the demo to completion; returns the exit status."""
    status = make_app(port, console_port, interval, seconds).run(loop=loop)
    if status:
        print("archangel demo: could not start (see the log above)", file=sys.stderr)
    return status
