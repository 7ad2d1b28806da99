"""``Serving``: what the App does for one served framework, at START and at STOP.

The base of the framework glue in :mod:`archangel.service.frameworks` (aiohttp,
websockets) and :mod:`archangel.service.asgi` (uvicorn); no framework is imported
here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..kernel.manager import ProcessManager

__all__ = ["Serving"]


class Serving:
    """What the App does for one framework target, around its connections.

    :meth:`start` runs when the App serves the target (in a START hook:
    aiohttp's on_startup, the ASGI lifespan startup) and returns the protocol
    factory to listen with; :meth:`stopping` runs at STOP before the drain
    (aiohttp's on_shutdown), :meth:`stopped` after it (aiohttp's on_cleanup,
    the lifespan shutdown).

    Attributes:
        target: What was served (an aiohttp application, a uvicorn config...).
    """

    def __init__(self, target: Any, manager: ProcessManager) -> None:
        self.target = target
        self.manager = manager
        self._factory: Callable[[], Any] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target!r}>"

    async def factory(self) -> Callable[[], Any]:
        """The protocol factory to listen with; the first call runs :meth:`start`."""
        if self._factory is None:
            self._factory = await self.start()
        return self._factory

    async def start(self) -> Callable[[], Any]:
        """Start the framework's side; return the protocol factory to listen with."""
        raise NotImplementedError

    async def stopping(self) -> None:
        """At STOP, before the processes drain."""

    async def stopped(self) -> None:
        """At STOP, after the processes drained."""
