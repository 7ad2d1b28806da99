"""Framework glue: aiohttp and websockets served with every connection a process.

What :class:`~archangel.App`'s ``serve`` (given an aiohttp object) and
``serve_websockets`` build on, and :func:`serving_for`, which tells which
framework an object handed to ``serve`` belongs to (:mod:`archangel.service.asgi`
holds uvicorn's glue, :mod:`archangel.service.streams` asyncio streams'). Each
framework gets

* a way to make its connections processes: an adopted aiohttp request handler
  (:class:`~archangel.kernel.adopt.AiohttpConnection`), or a
  :class:`~archangel.kernel.adopt.ConnectionProcess` beside the framework's own
  protocol (websockets, uvicorn, streams);
* a :class:`Serving`: what the framework's own runner
  does around its connections (aiohttp's on_startup, on_shutdown and
  on_cleanup signals; uvicorn's ASGI lifespan), done at the App's START and
  STOP.

aiohttp, uvicorn and websockets are optional: none is imported here at import
time. A framework object handed to the App has been made by its framework, so
that framework is imported already; the entry points that take a plain
callable import theirs when called, and say so with a
:class:`~archangel.errors.FrameworkError` when it is missing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import FrameworkError, InvalidArgument
from ..kernel.adopt import AiohttpConnection, ConnectionProcess
from ..kernel.manager import ProcessManager
from .asgi import UvicornServing
from .serving import Serving

if TYPE_CHECKING:
    from websockets.asyncio.server import Server as WebSocketServer

__all__ = [
    "AiohttpServing",
    "Serving",
    "WebSocketConnection",
    "WebSocketServing",
    "serving_for",
]

logger = logging.getLogger(__name__)


def _log_failure(what: str, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("%s raised", what, exc_info=exc)


def serving_for(target: Any, manager: ProcessManager) -> Serving | None:
    """The :class:`Serving` for a framework object, or None for a plain protocol factory.

    Recognised: an aiohttp ``web.Application``, ``AppRunner`` (or any
    ``BaseRunner``) and low-level ``web.Server``; a ``uvicorn.Config``.
    """
    web_app = sys.modules.get("aiohttp.web_app")
    web_runner = sys.modules.get("aiohttp.web_runner")
    web_server = sys.modules.get("aiohttp.web_server")
    if (
        (web_app is not None and isinstance(target, web_app.Application))
        or (web_runner is not None and isinstance(target, web_runner.BaseRunner))
        or (web_server is not None and isinstance(target, web_server.Server))
    ):
        return AiohttpServing(target, manager)
    uvicorn_config = sys.modules.get("uvicorn.config")
    if uvicorn_config is not None and isinstance(target, uvicorn_config.Config):
        return UvicornServing(target, manager)
    return None


# -- aiohttp ---------------------------------------------------------------------------


class AiohttpServing(Serving):
    """aiohttp served as its ``run_app`` serves it, each connection an :class:`AiohttpConnection`.

    * ``start``: an ``Application`` gets an ``AppRunner``; a runner not set
      up yet is set up (``on_startup``, cleanup contexts entered). A low-level
      ``web.Server`` needs neither.
    * ``stopping``: the connections of this server stop (idle ones close, a
      request in flight finishes), then ``on_shutdown`` runs (where an
      aiohttp application closes its WebSockets).
    * ``stopped``: ``on_cleanup`` runs (cleanup contexts exited).
    """

    _runner: Any = None
    _server: Any = None
    _setup_begun = False

    async def start(self) -> Callable[[], Any]:
        from aiohttp import web

        target = self.target
        if isinstance(target, web.Application):
            self._runner = web.AppRunner(target)
        elif isinstance(target, web.BaseRunner):
            if getattr(target, "_handle_signals", False):
                raise InvalidArgument(
                    f"cannot serve {target!r} made with handle_signals=True: it would take "
                    "SIGINT and SIGTERM from the App's signal policy"
                )
            self._runner = target
        if self._runner is None:
            self._server = target
        else:
            if self._runner.server is None:
                self._setup_begun = True
                await self._runner.setup()
            self._server = self._runner.server
        factory: Callable[[], Any] = self.manager.register(self._server)
        return factory

    async def stopping(self) -> None:
        if self._server is None:
            return
        # As run_app's cleanup: every connection told first (pre_shutdown), so
        # idle keep-alive connections go at once, then the on_shutdown signal.
        handlers = set(self._server.connections)
        for process in self.manager.processes():
            if isinstance(process, AiohttpConnection) and process.protocol in handlers:
                process.stop()
        if self._runner is not None and self._runner.server is not None:
            await self._runner.shutdown()

    async def stopped(self) -> None:
        from aiohttp import web

        # Not runner.cleanup(): that would send on_shutdown a second time.
        if isinstance(self._runner, web.AppRunner) and (
            self._setup_begun or self._runner.server is not None
        ):
            await self._runner.app.cleanup()


# -- websockets ------------------------------------------------------------------------


class WebSocketConnection(ConnectionProcess):
    """One connection of a ``websockets`` server (its ``asyncio`` implementation).

    * :meth:`stop` closes an open WebSocket with code 1001 (going away), as
      ``websockets``' own ``Server.close()`` does; the handler sees the
      connection closed (``recv()`` raises ``ConnectionClosedOK``, ``async
      for`` ends) and returns. A connection still in its opening handshake is
      closed.
    * :meth:`kill` cancels the connection's handler task and aborts the
      transport.

    The process ends once the TCP connection is closed and the handler has
    returned.
    """

    _closing: asyncio.Future[None] | None = None

    def on_stop(self) -> None:
        """Close with 1001 (going away)."""
        from websockets.protocol import State

        if self.transport is None:
            super().on_stop()
            return
        if self._lost or self._closing is not None:
            return
        connection = self.protocol
        if connection.protocol.state is State.OPEN:
            from websockets.frames import CloseCode

            self._closing = asyncio.ensure_future(connection.close(CloseCode.GOING_AWAY))
            self._closing.add_done_callback(functools.partial(_log_failure, f"close of {self!r}"))
        elif connection.protocol.state is State.CONNECTING:
            self.transport.close()

    def on_kill(self, reason: Any) -> None:
        """Cancel the handler and abort the transport."""
        if self._closing is not None:
            self._closing.cancel()
        super().on_kill(reason)


class WebSocketServing(Serving):
    """A ``websockets.asyncio.server.serve`` server whose connections are processes.

    Each ``ServerConnection`` (or what the ``create_connection`` argument
    makes) gets a :class:`WebSocketConnection`; the task that runs its opening
    handshake and then the handler is that process's work. The server binds
    its own socket: :meth:`listen` instead of :meth:`start`.
    """

    _server: WebSocketServer | None = None

    async def listen(self, host: str | None, port: int | None, **kwargs: Any) -> WebSocketServer:
        """Start the ``websockets`` server; ``kwargs`` as ``websockets``' ``serve()`` takes."""
        try:
            from websockets.asyncio.server import ServerConnection, serve
        except ImportError as exc:
            raise FrameworkError(
                "serving WebSockets needs the websockets package (pip install websockets)"
            ) from exc
        handler = self.target
        name = getattr(handler, "__qualname__", None) or type(handler).__name__
        make = kwargs.pop("create_connection", None) or ServerConnection
        register = self.manager.register

        def create_connection(*args: Any, **options: Any) -> ServerConnection:
            connection: Any = make(*args, **options)
            process = register(WebSocketConnection(connection, name=name))
            connection._archangel_process = process  # for handle(), below
            made, lost = connection.connection_made, connection.connection_lost

            def connection_made(transport: asyncio.BaseTransport) -> None:
                made(transport)
                process.attach(transport)

            def connection_lost(exc: Exception | None) -> None:
                try:
                    lost(exc)
                finally:
                    process.detach(exc)

            # Instance attributes shadow the methods the transport calls.
            connection.connection_made = connection_made
            connection.connection_lost = connection_lost
            return connection  # type: ignore[no-any-return]

        # websockets documents create_connection as "a wrapper or a subclass"
        # of ServerConnection, though it types it as a class.
        server = serve(
            handler,
            host,
            port,
            create_connection=create_connection,  # type: ignore[arg-type]
            **kwargs,
        )
        run = server.handler  # websockets' own: the handshake, then the handler

        async def handle(connection: ServerConnection) -> None:
            task = asyncio.current_task()
            assert task is not None
            connection._archangel_process.add_task(task)  # type: ignore[attr-defined]
            await run(connection)

        server.handler = handle
        self._server = await server
        return self._server

    async def stopped(self) -> None:
        # Every connection has ended: this only lets the server object finish
        # its own bookkeeping, so that its wait_closed() returns.
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
