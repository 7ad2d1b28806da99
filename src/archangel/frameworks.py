"""Framework glue: aiohttp, uvicorn, websockets and asyncio streams, each connection a process.

What :class:`~archangel.App`'s ``serve``, ``serve_asgi``, ``serve_websockets``
and ``serve_streams`` build on. Each framework gets

* a way to make its connections processes: an adopted aiohttp request handler
  (:class:`~archangel.adopt.AiohttpConnection`), or a
  :class:`~archangel.adopt.ConnectionProcess` beside the framework's own
  protocol (uvicorn, websockets, streams);
* a :class:`Serving`: what the framework's own runner does around its
  connections — aiohttp's on_startup/on_shutdown/on_cleanup signals, uvicorn's
  ASGI lifespan and its Date header — done at the App's START and STOP.

aiohttp, uvicorn and websockets are optional: none is imported here at import
time. A framework object handed to the App has been made by its framework, so
that framework is imported already; the entry points that take a plain
callable import theirs when called, and say so with a :class:`FrameworkError`
when it is missing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from .adopt import AiohttpConnection, ConnectionProcess
from .errors import FrameworkError, InvalidArgument
from .manager import ProcessManager

if TYPE_CHECKING:
    from websockets.asyncio.server import Server as WebSocketServer

__all__ = [
    "AiohttpServing",
    "Serving",
    "StreamConnection",
    "UvicornConnection",
    "UvicornServing",
    "WebSocketConnection",
    "WebSocketServing",
    "serving_for",
    "stream_protocol_factory",
]

logger = logging.getLogger(__name__)

#: Stands in for uvicorn's loggers on a killed connection: uvicorn logs every
#: exception that ends an ASGI task, its cancellation included, as "Exception in
#: ASGI application"; a kill is not an error of the application.
_QUIET = logging.Logger("archangel.frameworks.killed")
_QUIET.disabled = True


def _log_failure(what: str, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("%s raised", what, exc_info=exc)


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


# -- uvicorn ---------------------------------------------------------------------------


class _Forwarding(asyncio.Protocol):
    """The transport's protocol for a framework protocol whose process is a companion.

    The data callbacks are the framework protocol's own bound methods, stored
    on the instance (no extra call per chunk); ``connection_made`` and
    ``connection_lost`` also tell the process.
    """

    def __init__(self, protocol: Any, process: ConnectionProcess) -> None:
        self._protocol = protocol
        self._process = process
        for name in ("data_received", "eof_received", "pause_writing", "resume_writing"):
            method = getattr(protocol, name, None)
            if method is not None:
                setattr(self, name, method)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._protocol.connection_made(transport)
        self._process.attach(transport)  # a process killed already aborts it

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._process.detach(exc)


class _Tasks:
    """uvicorn's task set of the whole server, seen by one connection's process too.

    A uvicorn protocol adds each ASGI task to ``self.tasks`` (the server's set,
    which ``limit_concurrency`` counts) and discards it when done; this keeps
    that set whole and also tells the connection's process, which ends only
    once its tasks have ended and cancels them when killed.
    """

    __slots__ = ("_process", "_shared")

    def __init__(self, shared: set[asyncio.Task[None]], process: ConnectionProcess) -> None:
        self._shared = shared
        self._process = process

    def add(self, task: asyncio.Task[None]) -> None:
        self._shared.add(task)
        self._process.add_task(task)

    def discard(self, task: asyncio.Task[None]) -> None:
        self._shared.discard(task)

    def __len__(self) -> int:
        return len(self._shared)


class UvicornConnection(ConnectionProcess):
    """One connection of a uvicorn server (HTTP, or a WebSocket it was upgraded to).

    * :meth:`stop` calls the protocol's ``shutdown()``, as uvicorn's server does
      at its end: an idle connection closes now, a request in flight finishes
      and then the connection closes; a WebSocket is closed with code 1012
      (service restart), uvicorn's choice.
    * :meth:`kill` cancels the connection's ASGI tasks (the application sees
      ``asyncio.CancelledError``; uvicorn's "Exception in ASGI application" log
      of it is silenced) and aborts the transport.

    An HTTP connection upgraded to a WebSocket stays the same process; its
    name becomes the WebSocket protocol's.
    """

    _stopping = False

    def upgraded(self, protocol: Any) -> None:
        """The connection now speaks through ``protocol`` (a WebSocket protocol)."""
        self.protocol = protocol
        self.name = type(protocol).__name__

    def on_stop(self) -> None:
        """uvicorn's graceful path: the protocol's ``shutdown()``."""
        if self.transport is None:
            super().on_stop()
        elif not self._stopping and not self._lost:
            self._stopping = True
            self.protocol.shutdown()

    def on_kill(self, reason: Any) -> None:
        """Cancel the ASGI tasks (quietly) and abort the transport."""
        for holder in (self.protocol, getattr(self.protocol, "cycle", None)):
            if holder is not None and getattr(holder, "logger", None) is not None:
                holder.logger = _QUIET
        super().on_kill(reason)


class UvicornServing(Serving):
    """An ASGI application served as ``uvicorn.Server`` serves it, each connection a process.

    * ``start``: the config is loaded, the lifespan protocol's startup runs
      (``FrameworkError`` if the application fails it), and the ``date`` and
      ``server`` headers are kept up to date once a second, as uvicorn's main
      loop does.
    * ``stopped`` (after the drain): the lifespan shutdown.

    What uvicorn's own ``Server`` does that the App does instead: signals
    (the App's policy), the graceful timeout (the App's ``shutdown_timeout``),
    the listening sockets. Not done: ``limit_max_requests`` and
    ``callback_notify`` (meant for uvicorn's worker processes), ``reload``
    and ``workers``.
    """

    _lifespan: Any = None
    _timer: asyncio.TimerHandle | None = None
    _started = False

    async def start(self) -> Callable[[], Any]:
        from uvicorn.server import ServerState

        config = self.target
        if not config.loaded:
            config.load()
        self._state = ServerState()
        self._lifespan = config.lifespan_class(config)
        self._started = True
        await self._lifespan.startup()
        if self._lifespan.should_exit:
            self._started = False  # uvicorn does not shut down a lifespan that failed
            raise FrameworkError(
                f"the ASGI application {config.app!r} failed its lifespan startup "
                "(uvicorn logged why)"
            )
        self._loop = asyncio.get_running_loop()
        self._tick()
        return self._protocol

    def _tick(self) -> None:
        config = self.target
        date = [(b"date", formatdate(usegmt=True).encode())] if config.date_header else []
        self._state.default_headers = date + config.encoded_headers
        self._timer = self._loop.call_later(1.0, self._tick)

    def _protocol(self) -> asyncio.Protocol:
        config = self.target
        protocol = config.http_protocol_class(
            config=config, server_state=self._state, app_state=self._lifespan.state
        )
        process = self.manager.register(UvicornConnection(protocol, name=type(protocol).__name__))
        self._adapt(protocol, process)
        return _Forwarding(protocol, process)

    def _adapt(self, protocol: Any, process: UvicornConnection) -> None:
        if hasattr(protocol, "tasks"):
            protocol.tasks = _Tasks(self._state.tasks, process)
        upgrade = getattr(protocol, "ws_protocol_class", None)
        if upgrade is not None:
            protocol.ws_protocol_class = functools.partial(self._upgrade, process, upgrade)

    def _upgrade(
        self, process: UvicornConnection, ws_protocol_class: Any, **kwargs: Any
    ) -> asyncio.Protocol:
        # uvicorn hands the transport to a new WebSocket protocol
        # (``transport.set_protocol``): the same connection, the same process.
        protocol = ws_protocol_class(**kwargs)
        self._adapt(protocol, process)
        process.upgraded(protocol)
        return _Forwarding(protocol, process)

    async def stopped(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._started:
            self._started = False
            await self._lifespan.shutdown()


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


# -- asyncio streams ---------------------------------------------------------------------


class StreamConnection(ConnectionProcess):
    """One connection of a streams server: its handler ``(reader, writer)`` is its work.

    * :meth:`stop`: the reader reaches end of file after the bytes already
      received (bytes arriving later are read and dropped); the writer still
      works, so the handler finishes the exchange in flight, sees EOF at its
      next read and returns.
    * When the handler returns (or raises), the connection is closed, after
      the buffered writes are flushed.
    * :meth:`kill` cancels the handler and aborts the transport.

    The process ends once the connection is closed and the handler has
    returned; if the handler raised, it ends with ``error``.
    """

    protocol: _StreamProtocol

    def _expected(self, exc: BaseException) -> bool:
        return self.protocol.stopped_reading and isinstance(exc, EOFError)

    def on_stop(self) -> None:
        """End of file for the reader; the handler finishes."""
        if self.transport is None:
            super().on_stop()
        elif not self._lost:
            self.protocol.stop_reading()


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """``asyncio.start_server``'s protocol, with the handler's task given to its process."""

    def __init__(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        process: StreamConnection,
        limit: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # A strong reference: the base class keeps only a weak one without a callback.
        self._archangel_reader = asyncio.StreamReader(limit=limit, loop=loop)
        super().__init__(self._archangel_reader, loop=loop)
        self._archangel_handler = handler
        self._archangel_process = process
        self._archangel_loop = loop
        self._archangel_writer: asyncio.StreamWriter | None = None
        self.stopped_reading = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        process = self._archangel_process
        if not process.attach(transport):
            return
        reader = self._archangel_reader
        writer = asyncio.StreamWriter(transport, self, reader, self._archangel_loop)  # type: ignore[arg-type]
        self._archangel_writer = writer
        task = self._archangel_loop.create_task(self._archangel_handler(reader, writer))
        process.add_task(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        if self._archangel_writer is not None:
            self._archangel_writer.close()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._archangel_process.detach(exc)

    def data_received(self, data: bytes) -> None:
        if not self.stopped_reading:
            super().data_received(data)

    def stop_reading(self) -> None:
        """End of file for the reader now; later bytes are dropped."""
        if not self.stopped_reading:
            self.stopped_reading = True
            self._archangel_reader.feed_eof()


def stream_protocol_factory(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    manager: ProcessManager,
    *,
    limit: int = 2**16,
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` running ``handler`` per connection.

    As ``asyncio.start_server(handler, limit=limit)``, except that each
    connection is a :class:`StreamConnection` registered with ``manager``.

    Raises:
        InvalidArgument: ``handler`` is not callable.
    """
    if not callable(handler):
        raise InvalidArgument(f"cannot serve streams with {handler!r}: not callable")
    loop = asyncio.get_running_loop()
    name = getattr(handler, "__qualname__", None) or type(handler).__name__
    register = manager.register

    def factory() -> asyncio.Protocol:
        process = register(StreamConnection(name=name))
        protocol = _StreamProtocol(handler, process, limit, loop)
        process.protocol = protocol
        return protocol

    return factory
