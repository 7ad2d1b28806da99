"""An echo service on N prefork workers, each answering with its pid.

Run it, then talk to it and signal the master::

    python examples/workers.py --workers 2 --port 8888 --pidfile /tmp/echo.pid
    printf 'hello\\n' | nc -q1 127.0.0.1 8888     # "4242: hello": the worker's pid
    archangel status --pidfile /tmp/echo.pid     # the master and its workers
    kill -HUP $(cat /tmp/echo.pid)               # roll the workers, one at a time
    kill -TTIN $(cat /tmp/echo.pid)              # one worker more
    kill -TERM $(cat /tmp/echo.pid)              # graceful stop of every worker

The same App runs under the command line as
``archangel run examples.workers:app --workers auto``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from archangel import App, State

app = App("echo-workers", shutdown_timeout=10)
PORT = int(os.environ.get("ECHO_PORT", "8888"))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo each line, prefixed with this worker's pid."""
    while line := await reader.readline():
        writer.write(f"{os.getpid()}: ".encode() + line)
        await writer.drain()


@app.bus.on(State.START)
async def start() -> None:
    # Every worker asks for the same address; the master binds it once.
    server = await app.serve_streams(echo, "127.0.0.1", PORT)
    # One write: the workers share stdout (print() writes its pieces one by one
    # when stdout writes through, under PYTHONUNBUFFERED).
    sys.stdout.write(f"worker {os.getpid()} serving on {server.sockets[0].getsockname()}\n")
    sys.stdout.flush()


def main() -> int:
    global PORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="2", help="a count, or auto (default 2)")
    parser.add_argument("--port", type=int, default=PORT, help="0: any free port")
    parser.add_argument("--pidfile", default=None, help="hold this pidfile (the master's pid)")
    args = parser.parse_args()
    PORT = args.port
    if args.pidfile:
        from archangel.service import PidFile

        app.pidfile = PidFile(os.path.abspath(args.pidfile))
    logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
    return app.run(workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
