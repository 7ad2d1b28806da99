"""An ``asyncio.start_server``-style handler served by an App: every connection a process.

Run it and talk to it; the line ``slow`` takes three seconds to answer::

    python examples/streams_lines.py                # listens on 127.0.0.1:8888
    printf 'hello\nslow\nbye\n' | nc -q5 127.0.0.1 8888

Each line comes back upper-cased. On SIGTERM or Ctrl-C the handler's reader
reaches end of file after the lines already received: the answer in flight
is still written, then the handler returns and the connection closes.
"""

from __future__ import annotations

import argparse
import asyncio

from archangel import App, State

app = App("streams-lines", shutdown_timeout=30)
SLOW = 3.0  # seconds the line "slow" takes (--slow)


async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer each line upper-cased, until end of file."""
    while line := await reader.readline():
        if line.strip() == b"slow":
            print(f"slow line: {SLOW:g} s", flush=True)
            await asyncio.sleep(SLOW)
        writer.write(line.upper())
        await writer.drain()


def main() -> int:
    global SLOW
    parser = argparse.ArgumentParser(description="a streams handler served by archangel")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--slow", type=float, default=SLOW, help="seconds 'slow' takes")
    args = parser.parse_args()
    SLOW = args.slow

    @app.bus.on(State.START)
    async def start() -> None:
        server = await app.serve_streams(upper, args.host, args.port)
        print(f"serving on {args.host}:{server.sockets[0].getsockname()[1]}", flush=True)

    status = app.run(loop=args.loop)
    print(f"stopped: {app.manager.counters['kinds'].get('conn')}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
