"""rel's Creeper and SocketDaemon, on archangel (see docs/from_rel.rst).

rel's version::

    rel.signal(2, rel.abort)        # Ctrl-C ends dispatch()
    rel.timeout(1, self.creep)      # called every second while it returns True
    rel.read(sock, self.accept)     # a listening socket's callback
    rel.dispatch()

archangel's, below: the App's signal policy already stops on Ctrl-C (and
SIGTERM), :meth:`Bus.every <archangel.bus.Bus.every>` repeats while the call
returns something truthy, and a listening socket is :meth:`App.serve
<archangel.App.serve>` with a protocol whose every connection is a process.
rel's pub/sub helpers (``listen``, ``emit``, ``ask``, ``when``, ``transpire``)
are the bus's channels.

Run it: ``python examples/from_rel.py --ticks 3`` (Ctrl-C stops it sooner).
"""

from __future__ import annotations

import argparse
import asyncio
import resource

from archangel import App, Process, State

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--ticks", type=int, default=5, help="creep this many times, then stop")
parser.add_argument("--interval", type=float, default=1.0, help="seconds between creeps")
options = parser.parse_args()

app = App("creeper", shutdown_timeout=5)


class Creeper:
    """Logs how the process's peak memory moves (rel's example reads ``free``)."""

    def __init__(self, ticks: int) -> None:
        self.left = ticks
        self.last: int | None = None

    def creep(self) -> bool:
        current = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if self.last is not None:
            print(f"diff: {current - self.last:+d} KiB")
        self.last = current
        self.left -= 1
        if self.left > 0:
            return True  # rel: keep calling me
        app.bus.emit("done", "ticks")  # rel's emit(): publish without waiting
        return False  # the timer ends, as rel's timeout does


class Echo(Process, asyncio.Protocol):
    """rel.read(sock, accept) and dez's Connection, as one process per connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@app.bus.on("done")  # rel's listen(channel, cb)
def finished(why: str) -> None:
    print(f"done: {why}")
    app.bus.transpire("finished")  # rel's transpire(event)
    app.request_stop()  # rel's abort()


@app.bus.on("port")  # the first answer wins, as rel's ask()
def port() -> int:
    _host, number = app.addresses[0]
    return int(number)


@app.bus.on(State.START)
async def start() -> None:
    await app.serve(Echo, "127.0.0.1", 0)
    print(f"echo on port {await app.bus.ask('port')}")
    app.bus.when("finished", print, "stopping")  # rel's when(event, cb, *args)
    app.bus.every(options.interval, Creeper(options.ticks).creep)  # rel's timeout()


if __name__ == "__main__":
    raise SystemExit(app.run())  # rel's init() and dispatch(): uvloop by default
