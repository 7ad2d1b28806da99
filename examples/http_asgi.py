"""An ASGI application served through uvicorn by an App: every connection a process.

Run it, ask for a slow page, and stop the service while it is being made::

    python examples/http_asgi.py                     # listens on 127.0.0.1:8000
    curl 'http://127.0.0.1:8000/slow?seconds=3' &   # in flight...
    pkill -TERM -f http_asgi.py                     # ...and still answered: 200

``app.serve_asgi`` runs the ASGI lifespan as uvicorn does (startup before the
port is bound, shutdown after the last connection ended). Any ASGI framework
works the same way (Starlette, FastAPI...); this one is plain ASGI so the
example needs only uvicorn. ``--http h11`` picks uvicorn's pure-Python parser.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from urllib.parse import parse_qs

from archangel import App, State

app = App("http-asgi", shutdown_timeout=30)


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Plain ASGI: ``/`` says hello, ``/slow?seconds=N`` takes its time."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            print(message["type"], flush=True)
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b"hello\n"
    if scope["path"] == "/slow":
        query = parse_qs(scope["query_string"].decode())
        seconds = float(query.get("seconds", ["3"])[0])
        print(f"slow request: {seconds:g} s", flush=True)
        await asyncio.sleep(seconds)
        body = f"done after {seconds:g} s\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> int:
    parser = argparse.ArgumentParser(description="an ASGI app served by archangel")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()

    @app.bus.on(State.START)
    async def start() -> None:
        server = await app.serve_asgi(asgi, args.host, args.port, http=args.http, lifespan="on")
        print(f"serving on http://{args.host}:{server.sockets[0].getsockname()[1]}", flush=True)

    status = app.run(loop=args.loop)
    print(f"stopped: {app.manager.counters['kinds'].get('conn')}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
