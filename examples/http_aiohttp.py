"""An aiohttp application served by an App: every connection a process, stops graceful.

Run it, ask for a slow page, and stop the service while it is being made::

    python examples/http_aiohttp.py                  # listens on 127.0.0.1:8080
    curl 'http://127.0.0.1:8080/slow?seconds=3' &   # in flight...
    pkill -TERM -f http_aiohttp.py                  # ...and still answered: 200

The App does what aiohttp's ``run_app`` does (``on_startup``, ``on_shutdown``,
``on_cleanup`` at the right moments); on SIGTERM or Ctrl-C idle keep-alive
connections close at once, the request in flight is finished, then the
service exits. ``/ps`` lists the connections the App's manager holds.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from archangel import App, State

app = App("http-aiohttp", shutdown_timeout=30)
routes = web.RouteTableDef()


@routes.get("/")
async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


@routes.get("/slow")
async def slow(request: web.Request) -> web.Response:
    seconds = float(request.query.get("seconds", "3"))
    print(f"slow request: {seconds:g} s", flush=True)
    await asyncio.sleep(seconds)
    return web.Response(text=f"done after {seconds:g} s\n")


@routes.get("/ps")
async def ps(request: web.Request) -> web.Response:
    rows = [f"{info.pid} {info.name} {info.details.get('peer')}" for info in app.manager.ps()]
    return web.Response(text="\n".join(rows) + "\n")


async def started(webapp: web.Application) -> None:
    print("aiohttp on_startup", flush=True)


async def shutting_down(webapp: web.Application) -> None:
    print("aiohttp on_shutdown", flush=True)


async def cleaned_up(webapp: web.Application) -> None:
    print("aiohttp on_cleanup", flush=True)


def make_webapp() -> web.Application:
    webapp = web.Application()
    webapp.add_routes(routes)
    webapp.on_startup.append(started)
    webapp.on_shutdown.append(shutting_down)
    webapp.on_cleanup.append(cleaned_up)
    return webapp


def main() -> int:
    parser = argparse.ArgumentParser(description="aiohttp served by archangel")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()

    @app.bus.on(State.START)
    async def start() -> None:
        server = await app.serve(make_webapp(), args.host, args.port)
        print(f"serving on http://{args.host}:{server.sockets[0].getsockname()[1]}", flush=True)

    status = app.run(loop=args.loop)
    print(f"stopped: {app.manager.counters['kinds'].get('conn')}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
