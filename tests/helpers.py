"""Small helpers shared by the tests: real servers on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def serve(factory: Callable[[], Any]) -> tuple[asyncio.Server, int]:
    """Start ``factory`` on 127.0.0.1 with an ephemeral port; return (server, port)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=2048)
    return server, server.sockets[0].getsockname()[1]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)
