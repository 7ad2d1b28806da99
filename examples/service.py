"""A complete service: an echo server run by ``archangel run``.

Run it in the foreground or as a daemon, and drive it with signals::

    archangel run examples.service:app              # Ctrl-C stops it
    archangel run examples.service:app --daemon --pidfile /tmp/echo.pid --log-file /tmp/echo.log
    archangel signal --pidfile /tmp/echo.pid usr2   # state JSON: /tmp/echo-service.state.json
    archangel signal --pidfile /tmp/echo.pid term   # graceful stop

Settings come from the environment, so one file serves the docs and the
tests: ``SERVICE_PORT`` (default 8888; 0 picks a free port, listed in the
state dump), ``SERVICE_SHUTDOWN_TIMEOUT`` (seconds, default 30),
``SERVICE_STATE_FILE`` and ``SERVICE_RUNLOG_FILE`` (dump paths) and
``SERVICE_HOOK_LOG`` (a file that gets one line per connection exit, written by
its at-exit hook).
"""

from __future__ import annotations

import asyncio
import logging
import os

from archangel import App, Process, State

log = logging.getLogger("service")

app = App(
    "echo-service",
    shutdown_timeout=float(os.environ.get("SERVICE_SHUTDOWN_TIMEOUT", "30")),
    state_file=os.environ.get("SERVICE_STATE_FILE"),
    runlog_file=os.environ.get("SERVICE_RUNLOG_FILE"),
)
HOOK_LOG = os.environ.get("SERVICE_HOOK_LOG")
reloads = 0


class Echo(Process, asyncio.Protocol):
    """Echoes lines; records its exit in the hook log."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if HOOK_LOG:
            self.at_exit(_record_exit, self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _record_exit(process: Process) -> None:
    assert HOOK_LOG is not None
    with open(HOOK_LOG, "a") as out:
        out.write(f"{process.pid} {process.exit_reason.value if process.exit_reason else '?'}\n")


@app.bus.on(State.START)
async def start() -> None:
    await app.serve(Echo, "127.0.0.1", int(os.environ.get("SERVICE_PORT", "8888")))


@app.bus.on("reload")
def reload() -> None:
    global reloads
    reloads += 1
    log.info("reload #%d: connections stay up", reloads)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(app.run())
