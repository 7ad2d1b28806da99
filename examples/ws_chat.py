"""A WebSocket chat room served by an App: every connection a process.

Run it and talk to it from two terminals (websockets ships a client)::

    python examples/ws_chat.py                      # listens on 127.0.0.1:8765
    python -m websockets ws://127.0.0.1:8765        # type lines: everyone sees them

Each line a client sends goes to every client. On SIGTERM or Ctrl-C every
WebSocket is closed with code 1001 (going away), each handler returns, and the
service exits; the console's ``kill PID`` cancels one connection's handler.
"""

from __future__ import annotations

import argparse

from websockets.asyncio.server import ServerConnection, broadcast

from archangel import App, State

app = App("ws-chat", shutdown_timeout=30)
room: set[ServerConnection] = set()


async def chat(websocket: ServerConnection) -> None:
    """Join the room, repeat every message to it, leave."""
    room.add(websocket)
    try:
        async for message in websocket:
            broadcast(room, f"{websocket.remote_address[1]}: {message}")
    finally:
        room.discard(websocket)


def main() -> int:
    parser = argparse.ArgumentParser(description="a WebSocket chat served by archangel")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()

    @app.bus.on(State.START)
    async def start() -> None:
        server = await app.serve_websockets(chat, args.host, args.port)
        print(f"serving on ws://{args.host}:{server.sockets[0].getsockname()[1]}", flush=True)

    status = app.run(loop=args.loop)
    print(f"stopped: {app.manager.counters['kinds'].get('conn')}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
